#!/usr/bin/env python3
"""The cluster test behind ansible/test/run (which installs the tools and then runs this).

Lints the playbook, builds Berth's binaries, makes Debian bookworm test hosts out of containers
(debootstrap + docker import, systemd as init, each with its own dockerd on a network of its
own), runs ansible/site.yml against them twice, checks the cluster as an operator would, and
removes everything it made, whatever happens. Every check either passes, fails, or is printed
as NOT RUN with the reason (counted as skipped, never as passed).

The host's Docker Engine only runs the test hosts: the Swarm, Berth and the demo live in the
test hosts' own engines, so the host engine's Swarm state is never touched.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ANSIBLE = HERE.parent
REPO = ANSIBLE.parent


class _GroupVarsLoader(yaml.SafeLoader):
    """Reads Ansible's `!unsafe` tag as the plain string it marks."""


_GroupVarsLoader.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))
GROUP_VARS = yaml.load((ANSIBLE / "group_vars/all/main.yml").read_text(), Loader=_GroupVarsLoader)

# The base image: what `debootstrap --include` puts in (a Vagrant box has these too), and the
# packages the roles install (read from their defaults), downloaded but not installed into the
# image's apt cache so the hosts do not each fetch them. The roles still install them with apt.
BASE_INCLUDE = "python3,ca-certificates,systemd,systemd-sysv,dbus,sudo"
ROLE_PACKAGE_VARS = [("common", "common_packages"), ("docker", "docker_packages"), ("logging", "logging_packages"),
                     ("berth", "berth_packages"), ("metrics", "metrics_node_packages"),
                     ("metrics", "metrics_prometheus_packages")]
PREFETCH = sorted({re.sub(r"\{\{.*?\}\}", "", pkg)  # drop the optional "={{ version }}"
                   for role, var in ROLE_PACKAGE_VARS
                   for pkg in yaml.load((ANSIBLE / f"roles/{role}/defaults/main.yml").read_text(),
                                        Loader=_GroupVarsLoader)[var]})
ROOTFS_RECIPE_VERSION = "1"  # bump to invalidate cached root filesystems
ROOTFS_MAX_AGE_S = 7 * 24 * 3600

# Images that cannot be pulled here, replaced by busybox stand-ins (test/standin.sh):
# group variable -> (stand-in name, port it serves, data directories it marks).
STANDINS = {
    "metrics_cadvisor_image": ("cadvisor", GROUP_VARS["metrics_cadvisor_port"], ""),
    "metrics_grafana_image": ("grafana", GROUP_VARS["metrics_grafana_port"], ""),
    "logging_loki_image": ("loki", GROUP_VARS["logging_loki_port"], ""),
    "logging_promtail_image": ("promtail", GROUP_VARS["logging_promtail_port"], ""),
    "apps_mongo_image": ("mongo", 27017, "/data/db"),
    "apps_redis_image": ("redis", 6379, "/data"),
    "apps_api_image": ("api", 80, ""),
    "apps_web_image": ("web", 80, ""),
}
SUBNETS = ["172.30.213.0/24", "172.29.213.0/24", "192.168.213.0/24", "172.28.213.0/24"]
STACK = GROUP_VARS["apps_stack_name"]


# --- output ----------------------------------------------------------------------------------


def say(msg: str = "") -> None:
    print(msg, flush=True)


class CheckFailed(Exception):
    pass


def ensure(cond: object, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


class Results:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failed: list[str] = []
        self.not_run: list[tuple[str, str]] = []
        self.known: list[tuple[str, str]] = []

    def check(self, name: str, fn) -> object:
        """Runs one check: `fn` returns a detail string (or anything) or raises."""
        try:
            detail = fn()
        except CheckFailed as e:
            self.fail(name, str(e))
            return None
        except subprocess.TimeoutExpired as e:
            self.fail(name, f"timed out: {e}")
            return None
        except Exception as e:  # noqa: BLE001 - a broken check is a failed check
            self.fail(name, f"{type(e).__name__}: {e}")
            return None
        self.passed.append(name)
        say(f"PASS: {name}" + (f" — {detail}" if isinstance(detail, str) and detail else ""))
        return detail if detail is not None else True

    def known_bug(self, name: str, bug: str, fn) -> None:
        """A check that fails today because of a bug outside this test, reported to the team: its
        failure is printed as KNOWN BUG and counted apart (never as passed); once it passes it
        fails, so that the mark is removed."""
        try:
            detail = fn()
        except (CheckFailed, subprocess.TimeoutExpired) as e:
            self.known.append((name, f"{e} — {bug}"))
            say(f"KNOWN BUG: {name} — {e} — {bug}")
            return
        self.fail(name, f"passes now ({detail}): remove its known-bug mark ({bug})")

    def fail(self, name: str, why: str) -> None:
        self.failed.append(name)
        say(f"FAIL: {name} — {why}")

    def skip(self, name: str, why: str) -> None:
        self.not_run.append((name, why))
        say(f"NOT RUN: {name} — {why}")


class Timings:
    def __init__(self) -> None:
        self.rows: list[tuple[str, float]] = []
        self.start = time.monotonic()

    @contextlib.contextmanager
    def phase(self, name: str):
        say(f"\n=== {name} ({time.strftime('%H:%M:%S', time.gmtime())})")
        t0 = time.monotonic()
        try:
            yield
        finally:
            dt = time.monotonic() - t0
            self.rows.append((name, dt))
            say(f"--- {name}: {dt:.0f} s")

    def report(self) -> None:
        say("\nTimings:")
        for name, dt in self.rows:
            say(f"  {dt:6.0f} s  {name}")
        say(f"  {time.monotonic() - self.start:6.0f} s  total")


# --- commands --------------------------------------------------------------------------------


def run(cmd: list[str], *, check: bool = True, timeout: float = 600, input: bytes | None = None,
        capture: bool = True, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run(cmd, input=input, timeout=timeout, env=env, cwd=cwd,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and p.returncode != 0:
        err = (p.stderr or b"").decode(errors="replace").strip()[-2000:]
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {err}")
    return p


def out(cmd: list[str], **kw) -> str:
    return run(cmd, **kw).stdout.decode(errors="replace")


def sh(container: str, script: str, *, check: bool = True, timeout: float = 120) -> str:
    """Runs a shell script inside a test host; returns stdout."""
    p = run(["docker", "exec", container, "sh", "-c", script], check=False, timeout=timeout)
    o = p.stdout.decode(errors="replace")
    if check and p.returncode != 0:
        raise CheckFailed(f"`{script}` on {container} exited {p.returncode}: "
                          f"{p.stderr.decode(errors='replace').strip()[-800:]}")
    return o


def poll(fn, timeout: float, interval: float = 2.0):
    """Calls fn until it returns without raising CheckFailed, or re-raises the last failure."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except CheckFailed:
            if time.monotonic() >= deadline:
                raise
        time.sleep(interval)


# --- the lab: everything this run creates on the host engine, removed at the end -------------


class Lab:
    def __init__(self, run_id: str, managers: int, workers: int) -> None:
        self.prefix = f"berth-ct-{run_id}"
        self.hosts: list[dict] = []
        for i in range(managers):
            self.hosts.append({"name": f"manager{i + 1}", "group": "managers", "octet": 21 + i,
                               "zone": "abc"[i % 3], "disk": "ssd"})
        for i in range(workers):
            self.hosts.append({"name": f"worker{i + 1}", "group": "workers", "octet": 31 + i,
                               "zone": "abc"[i % 3], "disk": "ssd" if i % 2 == 0 else "hdd"})
        self.containers: list[str] = []
        self.volumes: list[str] = []
        self.networks: list[str] = []
        self.images: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))

    def container(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def by_group(self, group: str) -> list[dict]:
        return [h for h in self.hosts if h["group"] == group]

    def teardown(self) -> list[str]:
        """Removes what this run made; returns the errors (never raises)."""
        errors = []
        steps = [(["docker", "rm", "-f", "-v"], self.containers),
                 (["docker", "volume", "rm", "-f"], self.volumes),
                 (["docker", "network", "rm"], self.networks),
                 (["docker", "rmi", "-f"], self.images)]
        for cmd, items in steps:
            if items:
                p = subprocess.run(cmd + items, capture_output=True, timeout=300)
                # An object named here but never made (a step failed) is "No such ...": not an error.
                errs = [e for e in p.stderr.decode(errors="replace").splitlines() if e and "No such" not in e]
                if p.returncode != 0 and errs:
                    errors.append(f"{' '.join(cmd)}: {'; '.join(errs)}")
        shutil.rmtree(self.workdir, ignore_errors=True)
        return errors

    def leftovers(self) -> list[str]:
        found = []
        for cmd in (["docker", "ps", "-a", "--filter", f"name={self.prefix}", "--format", "container {{.Names}}"],
                    ["docker", "volume", "ls", "--filter", f"name={self.prefix}", "--format", "volume {{.Name}}"],
                    ["docker", "network", "ls", "--filter", f"name={self.prefix}", "--format", "network {{.Name}}"],
                    ["docker", "images", "--filter", f"reference={self.prefix}*", "--format",
                     "image {{.Repository}}:{{.Tag}}"],
                    ["docker", "images", "--filter", f"reference={self.prefix}*/*", "--format",
                     "image {{.Repository}}:{{.Tag}}"]):
            found += [line for line in out(cmd, check=False).splitlines() if line.strip()]
        return found


# --- building the test hosts' image and the stand-ins ----------------------------------------


def debian_mirror() -> tuple[str, str | None]:
    """The Debian mirror this machine uses, and its deb822 sources file (if any) to reuse."""
    src = Path("/etc/apt/sources.list.d/debian.sources")
    if src.exists():
        text = src.read_text()
        for m in re.finditer(r"^URIs:\s*(\S+)", text, re.M):
            if "security" not in m.group(1):
                return m.group(1), text
    return "http://deb.debian.org/debian", None


def base_rootfs(cache: Path, use_cache: bool) -> Path:
    mirror, sources = debian_mirror()
    key = hashlib.sha256("\n".join([BASE_INCLUDE, " ".join(PREFETCH), mirror, sources or "",
                                    ROOTFS_RECIPE_VERSION]).encode()).hexdigest()[:12]
    tar = cache / f"rootfs-bookworm-{key}.tar"
    if use_cache and tar.exists() and time.time() - tar.stat().st_mtime < ROOTFS_MAX_AGE_S:
        say(f"reusing the cached root filesystem {tar} "
            f"(made {(time.time() - tar.stat().st_mtime) / 3600:.1f} h ago)")
        return tar
    for old in cache.glob("rootfs-bookworm-*.tar"):
        old.unlink()
    build = Path(tempfile.mkdtemp(dir=cache, prefix="rootfs-"))
    try:
        root = build / "root"
        t0 = time.monotonic()
        run(["debootstrap", "--variant=minbase", f"--include={BASE_INCLUDE}", "bookworm", str(root), mirror],
            timeout=900)
        say(f"debootstrap: {time.monotonic() - t0:.0f} s")
        if sources:  # the same suites as this machine: bookworm, -updates, -security
            (root / "etc/apt/sources.list").unlink(missing_ok=True)
            (root / "etc/apt/sources.list.d/debian.sources").write_text(sources)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        t0 = time.monotonic()
        run(["chroot", str(root), "sh", "-c",
             "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
             "--download-only --no-install-recommends " + " ".join(PREFETCH)], timeout=900)
        say(f"apt cache for the roles' packages: {time.monotonic() - t0:.0f} s")
        (root / "etc/resolv.conf").unlink()
        (root / "etc/hostname").write_text("localhost\n")
        partial = tar.with_suffix(".partial")
        with open(partial, "wb") as f:
            subprocess.run(["tar", "-C", str(root), "-c", "."], stdout=f, check=True)
        partial.rename(tar)
    finally:
        shutil.rmtree(build, ignore_errors=True)
    return tar


def standin_images(lab: Lab) -> tuple[Path, dict[str, str]]:
    """Builds one busybox stand-in image per unpullable image; returns the archive and refs."""
    root = lab.workdir / "standin-root"
    (root / "bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    shutil.copy("/bin/busybox", root / "bin/busybox")
    for applet in ["sh", "httpd", "mkdir", "hostname", "date", "echo", "printf", "cat", "sleep", "ls"]:
        (root / "bin" / applet).symlink_to("busybox")
    shutil.copy(HERE / "standin.sh", root / "standin")
    (root / "standin").chmod(0o755)
    (root / "bin/bash").symlink_to("/standin")
    layer = subprocess.run(["tar", "-C", str(root), "--owner=0", "--group=0", "-c", "."],
                           capture_output=True, check=True).stdout
    refs = {}
    for var, (name, port, data) in STANDINS.items():
        ref = f"{lab.prefix}-standin/{name}:test"
        run(["docker", "import",
             "-c", f"ENV STANDIN_NAME={name}", "-c", f"ENV STANDIN_PORT={port}",
             "-c", f"ENV STANDIN_DATA_DIRS={data}", "-c", 'ENTRYPOINT ["/standin"]',
             "-", ref], input=layer)
        lab.images.append(ref)
        refs[var] = ref
    archive = lab.workdir / "standins.tar"
    run(["docker", "save", "-o", str(archive)] + sorted(set(refs.values())))
    return archive, refs


# --- the test hosts --------------------------------------------------------------------------


HOST_FLAGS = [
    # --privileged is refused here (the sandbox lacks CAP_SYS_RESOURCE); this is what works.
    "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--cgroupns", "host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--device", "/dev/fuse",
    "--tmpfs", "/run", "--tmpfs", "/run/lock",
]


def start_hosts(lab: Lab, image: str) -> str:
    net = lab.prefix
    for subnet in SUBNETS:
        p = run(["docker", "network", "create", "--subnet", subnet, net], check=False)
        if p.returncode == 0:
            break
        say(f"subnet {subnet} unavailable: {p.stderr.decode().strip()}")
    else:
        raise RuntimeError("no free subnet for the test network")
    lab.networks.append(net)
    base = subnet.rsplit(".", 1)[0]
    for h in lab.hosts:
        h["address"] = f"{base}.{h['octet']}"
        c = lab.container(h["name"])
        vols = []
        for what, path in (("docker", "/var/lib/docker"), ("berth", "/var/lib/berth-volume")):
            v = f"{c}-{what}"
            run(["docker", "volume", "create", v])
            lab.volumes.append(v)
            vols += ["-v", f"{v}:{path}"]
        lab.containers.append(c)
        run(["docker", "run", "-d", "--name", c, "--hostname", h["name"], "--network", net,
             "--ip", h["address"]] + HOST_FLAGS + vols + [image])
    for h in lab.hosts:
        c = lab.container(h["name"])
        deadline, state = time.monotonic() + 120, ""
        while state not in ("running", "degraded"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"systemd in {c} is {state!r} after 120 s")
            time.sleep(1)  # until systemd answers on its bus, is-system-running prints nothing
            state = out(["docker", "exec", c, "systemctl", "is-system-running", "--wait"], check=False,
                        timeout=120).strip()
        if state == "degraded":
            failed = out(["docker", "exec", c, "systemctl", "--failed", "--no-legend"], check=False)
            say(f"{h['name']}: systemd degraded before the playbook: {failed.strip()}")
    return subnet


def write_inventory(lab: Lab, deb_dir: Path, berth_run: bool, archive: Path, refs: dict) -> tuple[Path, Path]:
    inv = {"all": {"vars": {"ansible_connection": "community.docker.docker", "ansible_user": "root",
                            "ansible_python_interpreter": "/usr/bin/python3"}}}
    for group in ("managers", "workers"):
        inv[group] = {"hosts": {h["name"]: {"ansible_host": lab.container(h["name"]),
                                            "node_address": h["address"], "zone": h["zone"],
                                            "disk": h["disk"]} for h in lab.by_group(group)}}
    workers = len(lab.by_group("workers"))
    test_vars = {
        "berth_deb_dir": str(deb_dir),
        "berth_run_enabled": berth_run,
        # Nested engines: no overlayfs inside the test hosts.
        "docker_storage_driver": "vfs",
        "docker_preload_images": [{"archive": str(archive), "images": sorted(set(refs.values()))}],
        # A privileged container cannot start inside a test host (no CAP_SYS_RESOURCE).
        "metrics_cadvisor_privileged": False,
        # Not written to ansible/credentials/ by the test.
        "metrics_grafana_admin_password": secrets.token_hex(12),
        # No IPVS in this kernel: no ingress routing mesh and no virtual IPs.
        "apps_publish_mode": "host",
        "apps_endpoint_mode": "dnsrr",
        "apps_resolve_image": "never",
        # Consul is skipped here: berth run registers nothing.
        "berth_run_consul": False,
        **refs,
    }
    if workers < 3:  # one Mongo member per node needs three nodes: use the managers too
        test_vars["apps_mongo_constraints"] = []
    inv_path, vars_path = lab.workdir / "inventory.yml", lab.workdir / "test-vars.yml"
    inv_path.write_text(yaml.safe_dump(inv, sort_keys=False))
    vars_path.write_text(yaml.safe_dump(test_vars, sort_keys=False))
    return inv_path, vars_path


RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)")


def playbook(inv: Path, test_vars: Path, extra: list[str], log: Path) -> tuple[int, dict, list[str]]:
    """Runs site.yml; returns its exit code, the recap per host, and the tasks that changed."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_DISPLAY_OK_HOSTS="false", ANSIBLE_DEPRECATION_WARNINGS="false",
               # The slowest tasks, printed after the recap.
               ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", ANSIBLE_PROFILE_TASKS_SUMMARY_ONLY="true",
               ANSIBLE_PROFILE_TASKS_TASK_OUTPUT_LIMIT="12", PYTHONUNBUFFERED="1")
    cmd = ["ansible-playbook", "-i", str(inv), "-e", f"@{test_vars}", "--skip-tags", "consul", "site.yml"]
    if os.environ.get("BERTH_TEST_EXTRA_VARS"):  # a developer's own overrides, applied last
        cmd[5:5] = ["-e", "@" + os.environ["BERTH_TEST_EXTRA_VARS"]]
    cmd += extra
    say("$ " + " ".join(cmd))
    recap, changed, task = {}, [], ""
    p = subprocess.Popen(cmd, cwd=ANSIBLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with open(log, "w") as f:
            for line in p.stdout:
                f.write(line)
                sys.stdout.write(line)
                if line.startswith("TASK ["):
                    task = line.strip()
                elif line.startswith("changed:"):
                    changed.append(f"{task} {line.strip()}")
                m = RECAP.match(line)
                if m:
                    recap[m.group(1)] = {k: int(v) for k, v in zip(
                        ("ok", "changed", "unreachable", "failed"), m.groups()[1:])}
        rc = p.wait()
    except BaseException:  # interrupted: stop the playbook before the teardown
        p.terminate()
        p.wait(timeout=60)
        raise
    sys.stdout.flush()
    return rc, recap, changed


# --- what an operator checks -----------------------------------------------------------------


class Cluster:
    """Helpers over the running test cluster."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.m1 = lab.container(lab.by_group("managers")[0]["name"])
        first = lab.by_group("managers")[0]["address"]
        # berth_control_store's default: raft (an instance on every manager) with more than one
        # manager, one instance on the first manager otherwise.
        managers = lab.by_group("managers")
        self.control_hosts = [h["name"] for h in (managers if len(managers) > 1 else managers[:1])]
        self.control_urls = [f"http://{h['address']}:{GROUP_VARS['berth_control_port']}" for h in managers
                             if h["name"] in self.control_hosts]
        self.control = self.control_urls[0]
        # berth_run_hosts: every manager with raft (they elect one), else the first manager.
        self.run_hosts = self.control_hosts
        self.run_urls = [f"http://{h['address']}:{GROUP_VARS['berth_run_port']}" for h in managers
                         if h["name"] in self.run_hosts]
        self._berth_run = f"http://{first}:{GROUP_VARS['berth_run_port']}"

    @property
    def berth_run(self) -> str:
        """The `berth run` that leads: the only one, or the one whose /v1/ready is not standby."""
        if len(self.run_urls) == 1:
            return self._berth_run
        for _ in range(60):
            for url in self.run_urls:
                o = sh(self.m1, f"curl -s -m 5 '{url}/v1/ready'", check=False)
                try:
                    if json.loads(o).get("status") not in (None, "standby"):
                        return url
                except ValueError:
                    pass
            time.sleep(1)
        return self._berth_run

    def nodes(self) -> list[dict]:
        ids = sh(self.m1, "docker node ls -q").split()
        return json.loads(sh(self.m1, "docker node inspect " + " ".join(ids)))

    def curl(self, url: str, *, token: bool = False, host: str | None = None, code_only: bool = False,
             check: bool = True) -> str:
        auth = '-H "Authorization: Bearer $(cat /etc/berth/token)" ' if token else ""
        if code_only:
            return sh(host or self.m1, f"curl -s -o /dev/null -w '%{{http_code}}' -m 10 {auth}'{url}'",
                      check=False).strip()
        return sh(host or self.m1, f"curl -s{'f' if check else ''} -m 10 {auth}'{url}'", check=check)

    def control_answer(self, url: str, *, token: bool = True) -> tuple[str, str]:
        """(HTTP code, body) of a GET; code 000 when nothing answers."""
        auth = '-H "Authorization: Bearer $(cat /etc/berth/token)" ' if token else ""
        o = sh(self.m1, f"curl -s -m 10 -w '\\n%{{http_code}}' {auth}'{url}'", check=False)
        body, _, code = o.rpartition("\n")
        return code.strip(), body

    def control_leader(self, path: str = "/v1/state/nodes") -> tuple[str, str]:
        """(base URL, body) of the instance answering 200: with several instances, only the Raft
        leader serves the API, the others answer 503 not-leader (not a failure)."""
        answers = []
        for url in self.control_urls:
            code, body = self.control_answer(url + path)
            if code == "200":
                return url, body
            answers.append(f"{url}: {code} {body[:200]}")
        raise CheckFailed(f"no control instance answered 200 on {path}: {'; '.join(answers)}")

    def control_get(self, path: str):
        return json.loads(poll(lambda: self.control_leader(path), 30)[1])

    def running_tasks(self, service: str) -> dict[str, str]:
        """slot/name -> node hostname for the service's running tasks."""
        o = sh(self.m1, f"docker service ps {service} --filter desired-state=running "
                        "--format '{{.Name}} {{.Node}} {{.CurrentState}}'")
        tasks = {}
        for line in o.splitlines():
            name, node, state = line.split(" ", 2)
            if state.startswith("Running"):
                tasks[name] = node
        return tasks


def check_swarm(r: Results, lab: Lab, cl: Cluster) -> dict[str, str]:
    ids: dict[str, str] = {}

    def swarm_nodes():
        nodes = cl.nodes()
        by_host: dict[str, list] = {}
        for n in nodes:
            by_host.setdefault(n["Description"]["Hostname"], []).append(n)
        for h in lab.hosts:
            entries = by_host.get(h["name"], [])
            ready = [n for n in entries if n["Status"]["State"] == "ready"]
            ensure(len(ready) == 1, f"{h['name']}: {len(ready)} ready entries (of {len(entries)})")
            n = ready[0]
            want_role = "manager" if h["group"] == "managers" else "worker"
            ensure(n["Spec"]["Role"] == want_role, f"{h['name']} is a {n['Spec']['Role']}, want {want_role}")
            labels = n["Spec"].get("Labels") or {}
            ensure(labels.get("zone") == h["zone"] and labels.get("disk") == h["disk"],
                   f"{h['name']} labels {labels}, want zone={h['zone']} disk={h['disk']}")
            if want_role == "manager":
                reach = (n.get("ManagerStatus") or {}).get("Reachability")
                ensure(reach == "reachable", f"manager {h['name']} is {reach}")
            ids[h["name"]] = n["ID"]
        extra = set(by_host) - {h["name"] for h in lab.hosts}
        ensure(not extra, f"nodes not in the inventory: {sorted(extra)}")
        return (f"{len(lab.hosts)} nodes ready, roles "
                f"{len(lab.by_group('managers'))} manager(s) + {len(lab.by_group('workers'))} worker(s), "
                "zone/disk labels as in the inventory")

    r.check("Swarm: every node once, ready, with its inventory role and labels", swarm_nodes)
    return ids


def check_berth(r: Results, lab: Lab, cl: Cluster, ids: dict[str, str], berth_run: bool) -> None:
    def control_nodes():
        nodes = cl.control_get("/v1/state/nodes")
        registered = {n["uuid"]: n for n in nodes}
        for h in lab.hosts:
            n = registered.get(ids.get(h["name"], "?"))
            ensure(n, f"{h['name']} (Swarm node {ids.get(h['name'])}) is not registered: {nodes}")
            ensure(n["transfer"] == f"{h['address']}:{GROUP_VARS['berth_agent_transfer_port']}",
                   f"{h['name']} registered transfer address {n['transfer']}")
        return f"GET /v1/state/nodes lists all {len(lab.hosts)} agents by Swarm node ID with their transfer addresses"

    r.check("Berth control service answers and knows every node's agent", control_nodes)

    def token_required():
        leader, _ = cl.control_leader()
        code = cl.curl(leader + "/v1/state/nodes", code_only=True)
        ensure(code == "401", f"without the token the control service ({leader}) answered {code}")
        for url in cl.control_urls:
            code = cl.curl(url + "/v1/state/nodes", code_only=True)
            ensure(code != "200", f"without the token {url} answered 200")
        return "401 without the cluster token" + (f" (leader {leader})" if len(cl.control_urls) > 1 else "")

    r.check("Berth control service refuses a request without the cluster token", token_required)

    def plugin_sockets():
        for h in lab.hosts:
            o = sh(lab.container(h["name"]), "curl -sf -m 10 --unix-socket /run/docker/plugins/berth.sock "
                                             "-X POST http://plugin/Plugin.Activate")
            ensure("VolumeDriver" in json.loads(o).get("Implements", []), f"{h['name']}: {o}")
        return f"/Plugin.Activate answers VolumeDriver on all {len(lab.hosts)} nodes"

    r.check("Berth volume agent's plugin socket answers on every node", plugin_sockets)

    def units():
        for h in lab.hosts:
            want = ["berth-volume-agent", "berth-volume-plugin"]
            if h["name"] in cl.control_hosts:
                want.append("berth-volume-control")
            if h["name"] in cl.run_hosts and berth_run:
                want.append("berth")
            states = sh(lab.container(h["name"]), "systemctl is-active " + " ".join(want), check=False).split()
            ensure(states == ["active"] * len(want), f"{h['name']}: {dict(zip(want, states))}")
        return (f"agent on every node, control on {', '.join(cl.control_hosts)}" +
                (f", berth run on {', '.join(cl.run_hosts)}" if berth_run else ""))

    r.check("Berth's systemd units are active", units)

    name = "Replicated control service: exactly one Raft leader, every instance agrees (GET /v1/berth/raft)"
    if len(cl.control_urls) < 3:
        r.skip(name, f"{len(lab.by_group('managers'))} manager(s): the control service is a single instance "
                     "(store redb), no Raft group; run with --full")
    else:
        def raft():
            want_members = {str(i + 1): f"{h['address']}:{GROUP_VARS['berth_control_port']}"
                            for i, h in enumerate(lab.by_group("managers"))}

            def once():
                views = {}
                for i, url in enumerate(cl.control_urls):
                    code, body = cl.control_answer(url + "/v1/berth/raft")
                    ensure(code == "200", f"{url}/v1/berth/raft answered {code}: {body[:200]}")
                    v = json.loads(body)
                    ensure(v.get("id") == i + 1, f"{url} says it is Raft id {v.get('id')}, want {i + 1}")
                    ensure(v.get("members") == want_members, f"{url} members {v.get('members')}, want {want_members}")
                    views[url] = v
                leaders = {v.get("leader") for v in views.values()}
                ensure(len(leaders) == 1 and None not in leaders, f"leaders seen: {({u: v.get('leader') for u, v in views.items()})}")
                leader = leaders.pop()
                leader_url = f"http://{want_members[str(leader)]}"
                for url in cl.control_urls:
                    code, body = cl.control_answer(url + "/v1/state/nodes")
                    if url == leader_url:
                        ensure(code == "200", f"the leader {url} answered {code}: {body[:200]}")
                    else:
                        ensure(code == "503", f"follower {url} answered {code}, want 503 not-leader")
                        err = json.loads(body)
                        ensure(err.get("leader") == leader_url,
                               f"follower {url} answered {err}, want not-leader pointing at {leader_url}")
                return leader, views[leader_url].get("term")
            leader, term = poll(once, 60)
            return (f"all {len(cl.control_urls)} instances see leader {leader} (term {term}); it alone serves the "
                    "API, the followers answer 503 not-leader naming it")
        r.check(name, raft)

    name = "berth run answers /v1/health and /v1/ready, and /v1/plan only with the token"
    if not berth_run:
        r.skip(name, "berth run is not in this build")
        return

    def health():
        def once():
            for path in ("/v1/health", "/v1/ready"):
                code = cl.curl(cl.berth_run + path, code_only=True)
                ensure(code == "200", f"{path} answered {code}: {cl.curl(cl.berth_run + path, code_only=False, check=False)}")
            code = cl.curl(cl.berth_run + "/v1/plan", code_only=True)
            ensure(code == "401", f"/v1/plan without the cluster token answered {code}")
            code = cl.curl(cl.berth_run + "/v1/plan", token=True, code_only=True)
            ensure(code == "200", f"/v1/plan with the cluster token answered {code}")
        poll(once, 90)
        return "200 on both probes (a reconcile pass succeeded); /v1/plan 401 without the token, 200 with it"

    r.check(name, health)


def check_metrics(r: Results, lab: Lab, cl: Cluster, berth_run: bool) -> None:
    prom = f"http://127.0.0.1:{GROUP_VARS['metrics_prometheus_port']}"
    n = len(lab.hosts)

    def targets() -> dict[str, list[dict]]:
        data = json.loads(cl.curl(prom + "/api/v1/targets"))["data"]["activeTargets"]
        jobs: dict[str, list[dict]] = {}
        for t in data:
            jobs.setdefault(t["labels"]["job"], []).append(t)
        return jobs

    def job_up(job: str, count: int, note: str = ""):
        def f():
            def once():
                ts = targets().get(job, [])
                ensure(len(ts) == count, f"{len(ts)} {job} targets, want {count}")
                down = [(t["scrapeUrl"], t["health"], t["lastError"]) for t in ts if t["health"] != "up"]
                ensure(not down, f"not up: {down}")
            poll(once, 90, 5)
            return f"{count} target(s) up{note}"
        return f

    r.check("Prometheus scrapes itself", job_up("prometheus", 1))
    r.check("Prometheus: node exporter up on every node", job_up("node", n))
    r.check("Prometheus: cAdvisor target up on every node (STAND-IN image answering /metrics)",
            job_up("cadvisor", n, " — stand-in cAdvisor, not the real one"))

    berth_endpoints = [
        ("berth-volume-control", [u.removeprefix("http://") for u in cl.control_urls]),
        ("berth-volume-agent", [f"{h['address']}:{GROUP_VARS['berth_agent_transfer_port']}" for h in lab.hosts]),
    ]
    if berth_run:
        berth_endpoints.append(("berth", [u.removeprefix("http://") for u in cl.run_urls]))
    else:
        r.skip("Prometheus: berth run's /metrics up", "berth run is not in this build")
    for job, addrs in berth_endpoints:
        r.check(f"Prometheus: {job} /metrics up (with the role's token or credential)", job_up(job, len(addrs)))

    def query(expr: str) -> list[dict]:
        v = json.loads(cl.curl(prom + "/api/v1/query?query=" + urllib.parse.quote(expr)))
        ensure(v["status"] == "success", f"{expr}: {v}")
        return v["data"]["result"]

    def volume_services():
        def once():
            series = query("berth_node_alive == 1")
            ensure(all("exported_node" not in s["metric"] for s in series),
                   f"a target label overwrote the series' node label: {[s['metric'] for s in series]}")
            alive = {s["metric"]["node"] for s in series}
            ensure(len(alive) == n, f"{len(alive)} node(s) alive at the control service, want {n}: {sorted(alive)}")
            leased = query('berth_agent_lease_remaining_seconds > 0 and on(instance) berth_agent_self_fenced == 0')
            ensure(len(leased) == n, f"{len(leased)} agent(s) holding a lease and not self-fenced, want {n}")
        poll(once, 90, 5)
        return f"all {n} nodes alive at the control service; every agent holds its lease, none self-fenced"

    r.check("Prometheus: the volume services' metrics show every node heartbeating", volume_services)

    rule_files = [f for f in sorted((REPO / "observability/prometheus").glob("*.yml"))
                  if "groups" in (yaml.safe_load(f.read_text()) or {})]
    if not rule_files:
        r.skip("Prometheus loaded and evaluates the repository's rules",
               "observability/prometheus/ holds no rules file yet")
    else:
        want = {g["name"] for f in rule_files for g in yaml.safe_load(f.read_text())["groups"]}
        names = {rule["alert"] for f in rule_files for g in yaml.safe_load(f.read_text())["groups"]
                 for rule in g["rules"] if "alert" in rule}

        def rules():
            def once():
                groups = json.loads(cl.curl(prom + "/api/v1/rules"))["data"]["groups"]
                got = {g["name"]: g for g in groups}
                ensure(want <= set(got), f"rule groups {sorted(want - set(got))} not loaded (loaded: {sorted(got)})")
                loaded = [rule for g in want for rule in got[g]["rules"]]
                unhealthy = [(rule["name"], rule.get("health"), rule.get("lastError")) for rule in loaded
                             if rule.get("health") != "ok"]
                ensure(not unhealthy, f"rules not evaluated cleanly: {unhealthy}")
                return len(loaded)
            n_rules = poll(once, 90, 5)
            return f"{n_rules} rule(s) in {len(want)} group(s) from {', '.join(f.name for f in rule_files)}, each evaluated without error"
        r.check("Prometheus loaded and evaluates the repository's rules", rules)

        def quiet():
            active = [(a["labels"]["alertname"], a["state"]) for a in
                      json.loads(cl.curl(prom + "/api/v1/alerts"))["data"]["alerts"]
                      if a["labels"]["alertname"] in names]
            ensure(not active, f"alerts pending or firing: {active}")
            return f"none of the repository's {len(names)} alerts is pending or firing"
        if berth_run:
            r.check("Prometheus: Berth's alerts are quiet on the healthy cluster", quiet)
        else:
            r.skip("Prometheus: Berth's alerts are quiet on the healthy cluster", "berth run is not in this build")

    dashboards = sorted((REPO / "observability/grafana").glob("*.json"))
    if not dashboards:
        r.skip("Grafana provisioning holds the repository's dashboards", "observability/grafana/*.json does not exist yet")
    else:
        def provisioned():
            for d in dashboards:
                remote = sh(cl.m1, f"sha256sum /etc/berth-grafana/dashboards/{d.name}").split()[0]
                ensure(remote == hashlib.sha256(d.read_bytes()).hexdigest(), f"{d.name} differs on the monitoring host")
                json.loads(d.read_text())
            return f"{len(dashboards)} dashboard(s) installed for Grafana's file provider"
        r.check("Grafana provisioning holds the repository's dashboards", provisioned)
    r.skip("Grafana shows the Berth dashboard and Loki's logs", "Grafana and Loki are stand-ins here (no image can be pulled)")

    def central_containers():
        want = {cl.m1: ["grafana", "loki", "promtail", "cadvisor"]}
        for h in lab.hosts[1:]:
            want[lab.container(h["name"])] = ["cadvisor"]
        for c, names in want.items():
            for name in names:
                st = sh(c, f"docker inspect -f '{{{{.State.Status}}}} {{{{.Config.Image}}}}' {name}").split()
                ensure(st[0] == "running", f"{name} on {c} is {st[0]}")
        mounts = sh(cl.m1, "docker inspect -f '{{range .Mounts}}{{.Destination}} {{end}}' grafana").split()
        ensure("/etc/grafana/provisioning" in mounts, f"grafana mounts {mounts}")
        return "Grafana, Loki, Promtail on the first manager and cAdvisor on every node run (STAND-IN images)"

    r.check("The roles' containers run with their configuration (STAND-IN images)", central_containers)


def check_logging(r: Results, lab: Lab, cl: Cluster, run_id: str) -> None:
    worker = lab.by_group("workers")[-1]
    wc = lab.container(worker["name"])
    store = GROUP_VARS["logging_store_dir"]

    def arrives(path: str, text: str):
        def once():
            got = sh(cl.m1, f"grep -F -- '{text}' {path} 2>/dev/null || true")
            ensure(text in got, f"{text!r} not in {path} on the logging host")
        poll(once, 60)

    def system_line():
        marker = f"berth-cluster-test {run_id} {secrets.token_hex(4)}"
        sh(wc, f"logger -t berth-cluster-test '{marker}'")
        arrives(f"{store}/{worker['name']}/berth-cluster-test.log", marker)
        return f"logger on {worker['name']} -> {store}/{worker['name']}/berth-cluster-test.log on the logging host"

    r.check("A system log line from a worker reaches the central log store", system_line)

    def container_line():
        marker = f"berth-cluster-test container {run_id} {secrets.token_hex(4)}"
        image = sh(wc, "docker inspect -f '{{.Config.Image}}' cadvisor").strip()
        sh(wc, f"docker run --rm --name berth-log-probe --entrypoint /bin/echo {image} '{marker}'")
        arrives(f"{store}/{worker['name']}/berth-log-probe.log", marker)
        return f"a container's stdout on {worker['name']} -> journald driver -> rsyslog -> {store}"

    r.check("A container's log line from a worker reaches the central log store", container_line)

    def berth_logs():
        arrives(f"{store}/{worker['name']}/berth-volume-agent.log", "agent listening")
        return f"{worker['name']}'s berth-volume-agent log is in {store}/{worker['name']}/"

    r.check("Berth's own logs reach the central log store", berth_logs)
    r.skip("Log lines are queryable in Loki", "Loki and Promtail are stand-ins here (no image can be pulled)")


def check_apps(r: Results, lab: Lab, cl: Cluster, ids: dict[str, str], berth_run: bool) -> None:
    mongo_slots = GROUP_VARS["apps_mongo_replicas"]
    # Stateful templates run no task of their own: berth run runs each slot as <template>-<slot>.
    slots = {"mongo": mongo_slots, "redis": 1, "postgres": 1}
    plain = {"api": GROUP_VARS["apps_api_replicas"], "web": 1, "mongo-init": 1}
    if not berth_run:
        r.skip("The demo stack's services all run", "its stateful templates need berth run, which is not in this build")
        for what in ("The web front end answers on its published port",
                     "Mongo's slots each have a Berth volume on their node (recreate)",
                     "Redis's slot has a Berth volume on its node (move)",
                     "PostgreSQL (built from images/, no registry) commits and reads back on its Berth volume",
                     "The demo stack's stateful slots run on the nodes berth run chose"):
            r.skip(what, "berth run is not in this build")
        return

    def services():
        def once():
            for svc, n in plain.items():
                tasks = cl.running_tasks(f"{STACK}_{svc}")
                ensure(len(tasks) == n, f"{STACK}_{svc}: {len(tasks)}/{n} tasks running")
            for template, n in slots.items():
                ensure(not cl.running_tasks(f"{STACK}_{template}"), f"the template {STACK}_{template} runs a task")
                for k in range(1, n + 1):
                    ensure(len(cl.running_tasks(f"{STACK}_{template}-{k}")) == 1,
                           f"slot service {STACK}_{template}-{k} has no running task")
        poll(once, 240, 5)
        return (", ".join(f"{s} {n}/{n}" for s, n in plain.items()) + "; " +
                ", ".join(f"{t}-1..{n} one task each" for t, n in slots.items()) +
                " (STAND-IN images but PostgreSQL's)")

    if not r.check("The demo stack's services all run, its stateful templates as slot services", services):
        return

    def web():
        node = next(iter(cl.running_tasks(f"{STACK}_web").values()))
        addr = next(h["address"] for h in lab.hosts if h["name"] == node)
        body = cl.curl(f"http://{addr}:{GROUP_VARS['apps_web_port']}/")
        ensure("stand-in for web" in body, f"web answered {body!r}")
        return f"port {GROUP_VARS['apps_web_port']} on {node} answers (STAND-IN web)"

    r.check("The web front end answers on its published port", web)

    def slot_nodes(template: str) -> dict[int, str]:
        """slot -> hostname of the node running that slot's service."""
        return {k: next(iter(cl.running_tasks(f"{STACK}_{template}-{k}").values()))
                for k in range(1, slots[template] + 1)}

    def volumes(template: str):
        def f():
            datasets = [d for d in cl.control_get("/v1/configuration/datasets") if not d.get("deleted")]
            by_name = {d["metadata"].get("name"): d for d in datasets}
            for k, node in slot_nodes(template).items():
                name = f"{template}-data-{k}"
                d = by_name.get(name)
                ensure(d, f"no Berth dataset named {name} (have {sorted(by_name)})")
                ensure(d["primary"] == ids[node], f"{name}: primary {d['primary']}, slot {k} runs on {node} ({ids[node]})")
                ensure(d.get("mounted_on") == ids[node], f"{name}: mounted_on {d.get('mounted_on')}, want {node}")
                path = f"/var/lib/berth-volume/data/datasets/{d['dataset_id']}/data/standin.log"
                sh(lab.container(node), f"grep -q {template} {path}")
            return (f"{slots[template]} dataset(s) {template}-data-N, each primary and mounted on the node running "
                    "its slot, written through the plugin")
        return f

    r.check("Mongo's slots each have a Berth volume on their node (recreate)", volumes("mongo"))
    r.check("Redis's slot has a Berth volume on its node (move)", volumes("redis"))

    def postgres():
        node = slot_nodes("postgres")[1]
        c = lab.container(node)
        ctr = sh(c, f"docker ps -q --filter name={STACK}_postgres-1").split()
        ensure(len(ctr) == 1, f"{STACK}_postgres-1 runs {len(ctr)} containers on {node}")
        sql = ("CREATE TABLE IF NOT EXISTS berth_check (n int); INSERT INTO berth_check VALUES (1); "
               "SELECT count(*) FROM berth_check")
        out = sh(c, f"docker exec {ctr[0]} psql -U postgres -h /run/postgresql -tA -c '{sql}'")
        ensure(out.strip().splitlines()[-1].isdigit(), f"psql answered {out!r}")
        datasets = [d for d in cl.control_get("/v1/configuration/datasets") if not d.get("deleted")]
        d = next((d for d in datasets if d["metadata"].get("name") == "postgres-data-1"), None)
        ensure(d and d["primary"] == ids[node], f"postgres-data-1 is not primary on {node}: {d}")
        sh(c, f"test -s /var/lib/berth-volume/data/datasets/{d['dataset_id']}/data/pgdata/PG_VERSION")
        return (f"on {node}: initdb ran on the Berth volume postgres-data-1 (PG_VERSION there), a row "
                f"committed and counted ({out.strip().splitlines()[-1]} rows) through psql")

    r.check("PostgreSQL (built from images/, no registry) commits and reads back on its Berth volume", postgres)

    def placement():
        plan = json.loads(cl.curl(cl.berth_run + "/v1/plan", token=True))
        placed = {(p["service"], p.get("slot")): p["node"] for p in plan["placements"]}
        ensure(not plan.get("pending"), f"berth run has pending tasks: {plan['pending']}")
        for template in slots:
            for k, node in slot_nodes(template).items():
                chosen = placed.get((f"{STACK}_{template}", k))
                ensure(chosen == ids[node], f"{STACK}_{template} slot {k} runs on {node} ({ids[node]}), "
                                            f"berth run's plan puts it on {chosen}")
        zones = {h["name"]: h["zone"] for h in lab.hosts}
        mongo_zones = sorted(zones[n] for n in slot_nodes("mongo").values())
        mongo_nodes = set(slot_nodes("mongo").values())
        ensure(len(mongo_nodes) == mongo_slots, f"Mongo's slots share nodes: {slot_nodes('mongo')}")
        return (f"every slot runs where GET /v1/plan places it; Mongo's {mongo_slots} members on "
                f"{mongo_slots} nodes (zones {', '.join(mongo_zones)}); nothing pending")

    r.check("The demo stack's stateful slots run on the nodes berth run chose", placement)


def check_rejoin(r: Results, lab: Lab, cl: Cluster, inv: Path, test_vars: Path, timings: Timings,
                 berth_run: bool) -> None:
    worker = lab.by_group("workers")[-1]
    wc = lab.container(worker["name"])
    old = {n["ID"] for n in cl.nodes() if n["Description"]["Hostname"] == worker["name"]}
    sh(wc, "docker swarm leave")

    def gone():
        states = [n["Status"]["State"] for n in cl.nodes() if n["ID"] in old]
        ensure(states and all(s == "down" for s in states), f"{worker['name']}'s old entry is {states}")
    poll(gone, 60)
    first = lab.by_group("managers")[0]["name"]
    with timings.phase(f"playbook: {worker['name']} left the swarm; run --tags swarm,berth"):
        rc, _, _ = playbook(inv, test_vars, ["--tags", "swarm,berth", "--limit", f"{first},{worker['name']}"],
                            lab.workdir / "rejoin.log")

    def rejoined():
        ensure(rc == 0, f"the playbook exited {rc}")
        entries = [n for n in cl.nodes() if n["Description"]["Hostname"] == worker["name"]]
        ensure(len(entries) == 1, f"{len(entries)} entries for {worker['name']}: "
                                  f"{[(n['ID'], n['Status']['State']) for n in entries]}")
        n = entries[0]
        ensure(n["ID"] not in old and n["Status"]["State"] == "ready", f"{n['ID']} {n['Status']['State']}")
        labels = n["Spec"].get("Labels") or {}
        ensure(labels.get("zone") == worker["zone"] and labels.get("disk") == worker["disk"], f"labels {labels}")

        def registered():
            uuids = {x["uuid"] for x in cl.control_get("/v1/state/nodes")}
            ensure(n["ID"] in uuids, f"the agent on {worker['name']} did not register its new node ID {n['ID']}")
        poll(registered, 30)
        return (f"{worker['name']} joined again as {n['ID'][:12]} with its labels, its old entry removed, "
                "its Berth agent registered under the new ID")

    r.check("A node that left the swarm rejoins on the next run", rejoined)
    if not berth_run:
        r.skip("berth run stays ready after the node rejoined", "berth run is not in this build")
        return

    def still_ready():
        # /v1/ready turns 503 when no pass succeeded for 3 resync periods (30 s): wait that long.
        time.sleep(40)
        code = cl.curl(cl.berth_run + "/v1/ready", code_only=True)
        ensure(code == "200", f"/v1/ready answered {code}: {cl.curl(cl.berth_run + '/v1/ready', check=False)}")
        return "/v1/ready 200 40 s after the rejoin"

    # Swarm keeps the removed node's tasks (state orphaned); berth run once refused the whole
    # swarm over them ("unknown node"), and now sees that node as down.
    r.check("berth run stays ready after a node rejoined and its old entry was removed", still_ready)


# --- main ------------------------------------------------------------------------------------


def static_checks(r: Results, timings: Timings) -> None:
    with timings.phase("ansible-lint (production profile)"):
        lint_cache = ANSIBLE / ".ansible"
        had_lint_cache = lint_cache.exists()
        p = run(["ansible-lint", "--offline", "--nocolor"], check=False, cwd=ANSIBLE, timeout=600)
        if not had_lint_cache:  # ansible-lint leaves its cache in the project
            shutil.rmtree(lint_cache, ignore_errors=True)
        text = (p.stdout + p.stderr).decode(errors="replace")
        say(text.strip()[-3000:])
        r.check("ansible-lint, production profile", lambda: ensure(p.returncode == 0, "violations above") or
                "no violations")
    with timings.phase("ansible-playbook --syntax-check"):
        with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
            f.write("managers:\n  hosts:\n    manager1:\nworkers:\n  hosts:\n    worker1:\n")
            f.flush()
            p = run(["ansible-playbook", "-i", f.name, "--syntax-check", "site.yml"], check=False, cwd=ANSIBLE,
                    env=dict(os.environ, ANSIBLE_CONFIG=str(ANSIBLE / "ansible.cfg")))
        r.check("ansible-playbook --syntax-check site.yml",
                lambda: ensure(p.returncode == 0, (p.stdout + p.stderr).decode()[-2000:]) or "ok")
    with timings.phase("vagrant validate"):
        if not shutil.which("vagrant"):
            r.skip("vagrant validate", "Debian's vagrant package did not install on this machine")
        else:
            dot_vagrant = REPO / ".vagrant"
            had_dot_vagrant = dot_vagrant.exists()
            for topology in ({}, {"BERTH_MANAGERS": "1", "BERTH_WORKERS": "2"}):
                with tempfile.TemporaryDirectory() as home:
                    p = run(["vagrant", "validate", "--ignore-provider"], check=False, cwd=REPO, timeout=300,
                            env=dict(os.environ, VAGRANT_HOME=home, VAGRANT_CHECKPOINT_DISABLE="1", **topology))
                what = " ".join(f"{k}={v}" for k, v in topology.items()) or "vagrant.yml as committed (3 + 3)"
                r.check(f"vagrant validate ({what})",
                        lambda: ensure(p.returncode == 0, (p.stdout + p.stderr).decode()[-2000:]) or
                        p.stdout.decode().strip().splitlines()[-1])
            if not had_dot_vagrant:  # `vagrant validate` leaves an empty .vagrant/ behind
                shutil.rmtree(dot_vagrant, ignore_errors=True)


def berth_binaries(timings: Timings) -> tuple[Path, bool]:
    """Builds the packages the playbook installs (packaging/build-debs); returns their directory
    and whether this build has `berth run`."""
    with timings.phase("Berth packages (release build + cargo-deb)"):
        target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
        if not target.is_absolute():
            target = REPO / target
        # The packages' own build (berth-daemon and berth-volume alone, as they ship: without
        # the simulator's `testing` features), shared with ansible/test/packages, which .ci/run
        # runs just before.
        say("$ packaging/build-debs")
        run([str(REPO / "packaging/build-debs")], cwd=REPO, capture=False, timeout=3600)
        deb_dir = target / "debian"
        for b in ("berth", "berth-volume"):
            if not list(deb_dir.glob(f"{b}_*.deb")):
                raise RuntimeError(f"no {b} package in {deb_dir}")
        has_run = run([str(target / "release/berth"), "run", "--help"], check=False).returncode == 0
        say(f"`berth run`: {'present' if has_run else 'not in this build (its unit is not started; checks that need it are NOT RUN)'}")
    return deb_dir, has_run


def begin_run() -> tuple[Path, Results, Timings, str, str]:
    """What every test run starts with: its cache directory (BERTH_TEST_CACHE), results and
    timings, SIGTERM/SIGHUP unwinding like Ctrl-C (so the teardown always runs), the host
    engine's Swarm state (checked untouched at the end) and a run id."""
    cache = Path(os.environ.get("BERTH_TEST_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "berth-cluster-test")
    cache.mkdir(parents=True, exist_ok=True)

    def interrupted(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)
    swarm_before = out(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"]).strip()
    return cache, Results(), Timings(), swarm_before, secrets.token_hex(3)


def summary(r: Results, timings: Timings) -> int:
    """A run's last lines: timings, what did not run, known bugs, failures, the counts; the
    exit code."""
    timings.report()
    if r.not_run:
        say("\nNot run here (counted as skipped, not as passed):")
        for name, why in r.not_run:
            say(f"  NOT RUN: {name} — {why}")
    if r.known:
        say("\nKnown bugs (failed, counted apart, not as passed):")
        for name, why in r.known:
            say(f"  KNOWN BUG: {name} — {why}")
    if r.failed:
        say("\nFailed:")
        for name in r.failed:
            say(f"  FAIL: {name}")
    say("")
    if r.known:
        say(f"{len(r.known)} known bug(s), listed above")
    say(f"{len(r.passed)} passed, {len(r.failed)} failed, {len(r.not_run)} skipped")
    return 1 if r.failed else 0


def finish(r: Results, lab: Lab, timings: Timings, keep: bool, swarm_before: str, kept_extra: str = "") -> None:
    """A run's end, whatever happened: no more interruptions, then either what was kept
    (BERTH_TEST_KEEP) or a teardown checked to leave nothing behind, the host's Swarm untouched."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if keep:
        say(f"\nKEPT (BERTH_TEST_KEEP): containers {lab.containers}, volumes {lab.volumes}, "
            f"networks {lab.networks}, images {lab.images}{kept_extra}")
        return
    with timings.phase("teardown"):
        errors = lab.teardown()
    r.check("Teardown removed every container, volume, network and image this run made",
            lambda: (ensure(not errors, "; ".join(errors)),
                     ensure(not lab.leftovers(), f"left behind: {lab.leftovers()}")) and
            f"nothing named {lab.prefix}* is left on the host engine")
    swarm_after = out(["docker", "info", "--format", "{{.Swarm.LocalNodeState}}"], check=False).strip()
    r.check("The host engine's Swarm state is untouched",
            lambda: ensure(swarm_after == swarm_before, f"was {swarm_before}, now {swarm_after}") or
            f"still {swarm_after}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="3 managers + 3 workers (also BERTH_CLUSTER_FULL=1)")
    ap.add_argument("--no-cache", action="store_true", help="rebuild the base root filesystem")
    ap.add_argument("--keep", action="store_true", help="leave the test hosts running (also BERTH_TEST_KEEP=1)")
    args = ap.parse_args()
    full = args.full or os.environ.get("BERTH_CLUSTER_FULL") == "1"
    keep = args.keep or os.environ.get("BERTH_TEST_KEEP") == "1"
    cache, r, timings, swarm_before, run_id = begin_run()
    managers, workers = (3, 3) if full else (1, 2)
    lab = Lab(run_id, managers, workers)
    say(f"run {run_id}: {managers} manager(s) + {workers} worker(s); host engine Swarm: {swarm_before}")
    say("Stand-ins: " + ", ".join(f"{v} -> busybox stand-in" for v in STANDINS) +
        " (no image can be pulled here; see ansible/test/standin.sh)")
    r.skip("consul role (servers on managers, agents on workers, UI, DNS)",
           "no Consul binary can be obtained on this machine: the playbook runs with --skip-tags consul")

    try:
        static_checks(r, timings)
        bin_dir, berth_run = berth_binaries(timings)
        with timings.phase("base image (debootstrap + apt cache, docker import)"):
            tar = base_rootfs(cache, not args.no_cache)
            image = f"{lab.prefix}-host:bookworm"
            with open(tar, "rb") as f:
                subprocess.run(["docker", "import", "-c", 'CMD ["/sbin/init"]', "-", image], stdin=f, check=True,
                               stdout=subprocess.DEVNULL)
            lab.images.append(image)
        with timings.phase("stand-in images"):
            archive, refs = standin_images(lab)
        with timings.phase("test hosts up"):
            subnet = start_hosts(lab, image)
            say(f"network {lab.prefix} {subnet}: " + ", ".join(f"{h['name']}={h['address']}" for h in lab.hosts))
        inv, test_vars = write_inventory(lab, bin_dir, berth_run, archive, refs)

        with timings.phase("playbook, first run"):
            rc1, recap1, _ = playbook(inv, test_vars, [], lab.workdir / "run1.log")
        def first_run():
            ensure(rc1 == 0, f"ansible-playbook exited {rc1}")
            ensure(set(recap1) == {h["name"] for h in lab.hosts}, f"recap hosts {sorted(recap1)}")
            ensure(all(v["failed"] == 0 and v["unreachable"] == 0 for v in recap1.values()), f"recap {recap1}")
            return "changed per host: " + ", ".join(f"{h}={v['changed']}" for h, v in sorted(recap1.items()))
        r.check("First playbook run succeeds on every host", first_run)
        if rc1 != 0:
            raise CheckFailed("the first playbook run failed; nothing after it can be checked")

        with timings.phase("playbook, second run (idempotence)"):
            rc2, recap2, changed2 = playbook(inv, test_vars, [], lab.workdir / "run2.log")

        def idempotent():
            ensure(rc2 == 0, f"ansible-playbook exited {rc2}")
            ensure(set(recap2) == {h["name"] for h in lab.hosts}, f"recap hosts {sorted(recap2)}")
            bad = {h: v for h, v in recap2.items() if v["changed"] or v["failed"] or v["unreachable"]}
            ensure(not bad, f"{bad}; changed: {changed2}")
            return f"changed=0 failed=0 on all {len(recap2)} hosts"
        r.check("Second playbook run changes nothing (idempotence)", idempotent)

        with timings.phase("checks"):
            cl = Cluster(lab)
            ids = check_swarm(r, lab, cl)
            check_berth(r, lab, cl, ids, berth_run)
            check_metrics(r, lab, cl, berth_run)
            check_logging(r, lab, cl, run_id)
            check_apps(r, lab, cl, ids, berth_run)
        check_rejoin(r, lab, cl, inv, test_vars, timings, berth_run)
    except CheckFailed as e:
        r.fail("cluster test", str(e))
    except KeyboardInterrupt as e:
        r.fail("cluster test", f"interrupted ({e})")
    except Exception as e:  # noqa: BLE001 - reported, then torn down
        r.fail("cluster test", f"{type(e).__name__}: {e}")
    finally:
        finish(r, lab, timings, keep, swarm_before, f", files {lab.workdir}")

    return summary(r, timings)


if __name__ == "__main__":
    sys.exit(main())
