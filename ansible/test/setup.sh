# Sourced by ansible/test/run and ansible/test/packages: installs what both need (Debian:
# debootstrap, busybox-static, curl, vagrant; PyPI: ansible/requirements.txt into a venv under
# the cache directory) and sets $here, $cache and $venv.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${BERTH_TEST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/berth-cluster-test}
mkdir -p "$cache"

echo "=== ansible/test: packages ($(date -u +%H:%M:%S))"
need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ "${#need[@]}" -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Vagrant is only for `vagrant validate`; if Debian's package will not install, that check is
# reported as not run.
if ! command -v vagrant >/dev/null 2>&1; then
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends vagrant >/dev/null; } 2>"$cache/vagrant-install.log"; then
        echo "vagrant did not install (see $cache/vagrant-install.log)"
    fi
fi

req="$here/../requirements.txt"
venv="$cache/venv-$(sha256sum "$req" | cut -c1-12)"
if [ ! -x "$venv/bin/ansible-playbook" ] || [ ! -x "$venv/bin/ansible-lint" ]; then
    echo "=== ansible/test: venv $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
fi
export PATH="$venv/bin:$PATH"
