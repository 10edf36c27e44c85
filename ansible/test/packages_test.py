#!/usr/bin/env python3
"""The package test behind ansible/test/packages: Berth's Debian packages on a Debian host.

Builds `berth` and `berth-volume` (packaging/build-debs), starts one Debian bookworm test host
(the cluster test's recipe: debootstrap + docker import, systemd as init) with its own Docker
Engine in a one-node Swarm, installs the packages with apt, and checks what docs/install.md
says: the users, units and their order; nothing starts before its secret; once the token, the
node's credential and /etc/default/* are in place, the control service, the agent (and its
plugin loader) and `berth run` are active and healthy; a Docker restart keeps the plugin
listed; installing the packages again keeps everything healthy; removing them stops the
services and keeps the data. Removes everything it made and prints `N passed, M failed, K
skipped` last. The host engine only runs the test host: its own Swarm state is never touched.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cluster_test import (REPO, CheckFailed, Lab, Results, Timings, base_rootfs, begin_run, ensure, finish, poll, run, say,
                          sh, summary, start_hosts)

TOKEN_FILE = "/etc/berth/token"
CRED_FILE = "/etc/berth/node.cred"


def berth_processes(c: str) -> list[tuple[str, str]]:
    """(user, command line) of every Berth process in the test host, read from /proc (the
    minimal host has no procps)."""
    script = ("for d in /proc/[0-9]*; do cmd=$(tr '\\0' ' ' < $d/cmdline 2>/dev/null) || continue; "
              "case \"$cmd\" in /usr/bin/berth*) echo \"$(stat -c %U $d) $cmd\";; esac; done")
    lines = sh(c, script).strip().splitlines()
    # The shell running this loop is no Berth process; anything else is.
    return [(ln.split(" ", 1)[0], ln.split(" ", 1)[1]) for ln in lines if " " in ln]


def build_debs(timings: Timings) -> list[Path]:
    with timings.phase("packages: packaging/build-debs"):
        run([str(REPO / "packaging/build-debs")], cwd=REPO, capture=False, timeout=3600)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    debs = []
    for name in ("berth", "berth-volume"):
        found = sorted((target / "debian").glob(f"{name}_*.deb"))
        if not found:
            raise RuntimeError(f"packaging/build-debs made no {name} package in {target / 'debian'}")
        debs.append(found[-1])
        say(f"{found[-1].name}: {found[-1].stat().st_size} bytes")
    return debs


def install_and_check(r: Results, timings: Timings, c: str, names: str) -> None:
    """Installs the packages on test host c with apt and checks what they put there before any
    secret exists: files, conffiles, the user, units enabled but nothing started."""
    with timings.phase("install"):
        install = run(["docker", "exec", c, "sh", "-c",
                       f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {names}"],
                      check=False, timeout=900)

    def installed():
        ensure(install.returncode == 0, (install.stdout + install.stderr).decode(errors="replace")[-2000:])
        files = sh(c, "dpkg -L berth berth-volume")
        for f in ("/usr/bin/berth", "/usr/bin/berth-volume", "/lib/systemd/system/berth.service",
                  "/lib/systemd/system/berth-volume-agent.service",
                  "/lib/systemd/system/berth-volume-control.service",
                  "/lib/systemd/system/berth-volume-plugin.service", "/etc/default/berth",
                  "/etc/default/berth-volume"):
            ensure(f in files.split(), f"{f} is not in the packages: {files}")
        conf = sh(c, "dpkg-query -W -f '${Conffiles}\\n' berth berth-volume")
        ensure("/etc/default/berth " in conf and "/etc/default/berth-volume " in conf,
               f"/etc/default/* are not conffiles: {conf}")
        return "apt installed both with their dependencies; binaries, four units, two conffiles"
    r.check("apt installs berth and berth-volume on Debian bookworm", installed)

    def user_and_dirs():
        ids = sh(c, "id berth").strip()
        ensure("(docker)" in ids, f"berth is not in group docker: {ids}")
        st = sh(c, "stat -c '%U:%G %a' /etc/berth").strip()
        ensure(st == "root:berth 750", f"/etc/berth is {st}")
        return f"{ids}; /etc/berth {st}"
    r.check("The packages make the system user berth (group docker) and /etc/berth", user_and_dirs)

    def units_before_secrets():
        enabled = {u: sh(c, f"systemctl is-enabled {u}", check=False).strip()
                   for u in ("berth-volume-agent", "berth-volume-plugin", "berth-volume-control", "berth")}
        ensure(enabled == {"berth-volume-agent": "enabled", "berth-volume-plugin": "enabled",
                           "berth-volume-control": "disabled", "berth": "disabled"}, f"{enabled}")
        active = sh(c, "systemctl is-active berth-volume-agent", check=False).strip()
        ensure(active == "inactive", f"the agent is {active} without its credential")
        cond = sh(c, "systemctl show -p ConditionResult berth-volume-agent").strip()
        ensure(cond == "ConditionResult=no", f"the agent's start condition: {cond}")
        before = sh(c, "systemctl show -p Before berth-volume-agent").strip()
        ensure("docker.service" in before.split("=", 1)[1].split(), f"the agent is not before docker: {before}")
        return f"{enabled}; the agent skipped ({cond}) and ordered before docker.service"
    r.check("Units: agent enabled and ordered before docker, nothing started before its secret",
            units_before_secrets)


def reinstall_and_remove(r: Results, timings: Timings, c: str, names: str, healthy, cleanup: str) -> None:
    """Installs the packages again on the configured host c (an upgrade to the same version):
    its configuration kept and `healthy` passing again; then removes them: services stopped,
    binaries gone, the control state kept."""
    with timings.phase("reinstall (an upgrade to the same version)"):
        again = run(["docker", "exec", c, "sh", "-c",
                     f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --reinstall {names}"],
                    check=False, timeout=900)

    def reinstall():
        ensure(again.returncode == 0, (again.stdout + again.stderr).decode(errors="replace")[-2000:])
        args = sh(c, "grep -c '^AGENT_ARGS=\"--node-id' /etc/default/berth-volume").strip()
        ensure(args == "1", "the edited /etc/default/berth-volume was not kept")

        poll(healthy, 60)
        return "the configuration kept, every service active again, the node alive, berth run ready"
    r.check("Installing the packages again keeps everything configured and healthy", reinstall)

    with timings.phase("remove"):
        sh(c, cleanup, check=False, timeout=60)
        gone = run(["docker", "exec", c, "sh", "-c",
                    "DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq berth berth-volume"],
                   check=False, timeout=600)

    def removed():
        ensure(gone.returncode == 0, (gone.stdout + gone.stderr).decode(errors="replace")[-2000:])
        left = berth_processes(c)
        ensure(not left, f"processes left: {left}")
        ensure(sh(c, "test -e /usr/bin/berth-volume && echo yes || echo no").strip() == "no", "binary left")
        kept = sh(c, "ls /var/lib/berth-volume /var/lib/berth-volume/control 2>&1").strip()
        # berth.redb for a single instance, raft.redb for a member of the replicated service.
        ensure(".redb" in kept, f"the control state is gone: {kept}")
        return "services stopped, binaries gone, /var/lib/berth-volume kept"
    r.check("Removing the packages stops the services and keeps the data", removed)


def main() -> int:
    cache, r, timings, swarm_before, run_id = begin_run()
    keep = os.environ.get("BERTH_TEST_KEEP") == "1"
    lab = Lab(run_id, 1, 0)
    lab.prefix = f"berth-pt-{run_id}"
    say(f"run {run_id}: one Debian host; host engine Swarm: {swarm_before}")
    try:
        debs = build_debs(timings)
        with timings.phase("base image (debootstrap + apt cache, docker import)"):
            tar = base_rootfs(cache, True)
            image = f"{lab.prefix}-host:bookworm"
            with open(tar, "rb") as f:
                subprocess.run(["docker", "import", "-c", 'CMD ["/sbin/init"]', "-", image], stdin=f, check=True,
                               stdout=subprocess.DEVNULL)
            lab.images.append(image)
        with timings.phase("test host up, Docker Engine, one-node Swarm"):
            start_hosts(lab, image)
            host = lab.hosts[0]
            c, addr = lab.container(host["name"]), host["address"]
            # The nested engine: no overlayfs inside the test host (as the cluster test's).
            sh(c, "mkdir -p /etc/docker && echo '{\"storage-driver\": \"vfs\"}' > /etc/docker/daemon.json")
            sh(c, "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                  "docker.io curl >/dev/null", timeout=900)
            poll(lambda: ensure(sh(c, "docker info >/dev/null 2>&1 && echo up", check=False).strip() == "up",
                                "dockerd is not up"), 120)
            sh(c, f"docker swarm init --advertise-addr {addr} >/dev/null")
        for d in debs:
            run(["docker", "cp", str(d), f"{c}:/tmp/{d.name}"])
        names = " ".join(f"/tmp/{d.name}" for d in debs)

        install_and_check(r, timings, c, names)

        with timings.phase("configure and start"):
            node = sh(c, "docker info --format '{{.Swarm.NodeID}}'").strip()
            sh(c, f"umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > /tmp/t && "
                  f"install -o root -g berth -m 0640 /tmp/t {TOKEN_FILE} && rm /tmp/t")
            sh(c, f"umask 077; berth-volume credential --token-file {TOKEN_FILE} --node-id {node} > {CRED_FILE}")
            sh(c, f"""echo 'AGENT_ARGS="--node-id {node} --socket /run/docker/plugins/berth.sock """
                  f"""--data-root /var/lib/berth-volume/data --control http://{addr}:4523 --listen {addr}:4524 """
                  f"""--credential-file {CRED_FILE}"' >> /etc/default/berth-volume""")
            sh(c, f"""echo 'CONTROL_ARGS="--listen {addr}:4523 --state /var/lib/berth-volume/control """
                  f"""--token-file {TOKEN_FILE}"' >> /etc/default/berth-volume""")
            sh(c, f"""echo 'RUN_ARGS="--docker unix:///var/run/docker.sock --volume-control http://{addr}:4523 """
                  f"""--token-file {TOKEN_FILE} --listen {addr}:9440 --state-dir /var/lib/berth"' >> /etc/default/berth""")
            sh(c, "systemctl enable --now berth-volume-control berth >/dev/null 2>&1; "
                  "systemctl restart berth-volume-agent && systemctl restart berth-volume-plugin", check=False,
               timeout=180)
        auth = f'-H "Authorization: Bearer $(cat {TOKEN_FILE})"'

        def active():
            def once():
                states = sh(c, "systemctl is-active berth-volume-control berth-volume-agent berth-volume-plugin "
                               "berth", check=False).split()
                ensure(states == ["active"] * 4, f"control, agent, plugin, berth: {states}")
            poll(once, 60)
            procs = berth_processes(c)
            want = {("berth", "/usr/bin/berth-volume control"), ("root", "/usr/bin/berth-volume agent"),
                    ("berth", "/usr/bin/berth run")}
            seen = {(user, " ".join(cmd.split()[:2])) for user, cmd in procs}
            ensure(want <= seen, f"processes by user: {seen}")
            return "all four active; control and berth run as berth, the agent as root"
        r.check("Once configured, every service is active, as its user", active)

        def control_healthy():
            def once():
                nodes = json.loads(sh(c, f"curl -sf -m 5 {auth} http://{addr}:4523/v1/berth/nodes"))
                mine = [n for n in nodes if n["node"] == node]
                ensure(mine and mine[0]["alive"] and mine[0]["lease_expires_in_ms"] > 0, f"{nodes}")
            poll(once, 60)
            head = sh(c, f"curl -s -o /dev/null -D - http://{addr}:4523/v1/berth/nodes")
            ensure(" 401" in head.splitlines()[0] and "www-authenticate: bearer" in head.lower(), head)
            return "the node alive with a lease; 401 with WWW-Authenticate without the token"
        r.check("The control service sees the node's agent alive and holding its lease", control_healthy)

        def agent_healthy():
            o = sh(c, "curl -sf -m 10 --unix-socket /run/docker/plugins/berth.sock -X POST http://plugin/Plugin.Activate")
            ensure("VolumeDriver" in json.loads(o).get("Implements", []), o)
            sh(c, "docker volume create -d berth -o size=64MiB pkgtest >/dev/null", timeout=60)
            listed = sh(c, "docker volume ls --quiet --filter driver=berth").split()
            ensure("pkgtest" in listed, f"docker volume ls: {listed}")
            return "Plugin.Activate answers VolumeDriver; docker volume create -d berth made pkgtest"
        r.check("The agent serves the plugin: a Berth volume is created through Docker", agent_healthy)

        def berth_run_healthy():
            def once():
                for path in ("/v1/health", "/v1/ready"):
                    code = sh(c, f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{addr}:9440{path}",
                              check=False)
                    ensure(code == "200", f"{path}: {code}")
            poll(once, 60)
            no = sh(c, f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{addr}:9440/v1/plan", check=False)
            yes = sh(c, f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 {auth} http://{addr}:9440/v1/plan",
                     check=False)
            ensure((no, yes) == ("401", "200"), f"/v1/plan: {no} without the token, {yes} with it")
            return "/v1/health and /v1/ready 200; /v1/plan 401 without the token, 200 with it"
        r.check("berth run is ready, and its plan needs the token", berth_run_healthy)

        def docker_restart():
            sh(c, "systemctl restart docker", timeout=180)

            def once():
                listed = sh(c, "docker volume ls --quiet --filter driver=berth", check=False).split()
                ensure("pkgtest" in listed, f"after a Docker restart: {listed}")
                states = sh(c, "systemctl is-active berth-volume-agent berth-volume-plugin", check=False).split()
                ensure(states == ["active", "active"], f"agent, plugin: {states}")
            poll(once, 60)
            return "the Berth volume is still listed; the agent and the plugin loader are active"
        r.check("A Docker restart keeps the plugin loaded", docker_restart)

        def healthy_again():
            states = sh(c, "systemctl is-active berth-volume-control berth-volume-agent berth", check=False).split()
            ensure(states == ["active"] * 3, f"control, agent, berth: {states}")
            nodes = json.loads(sh(c, f"curl -sf -m 5 {auth} http://{addr}:4523/v1/berth/nodes"))
            ensure(any(n["node"] == node and n["alive"] for n in nodes), f"{nodes}")
            code = sh(c, f"curl -s -o /dev/null -w '%{{http_code}}' -m 5 http://{addr}:9440/v1/ready", check=False)
            ensure(code == "200", f"/v1/ready {code}")
        reinstall_and_remove(r, timings, c, names, healthy_again, cleanup="docker volume rm pkgtest >/dev/null")
    except CheckFailed as e:
        r.fail("package test", str(e))
    except KeyboardInterrupt as e:
        r.fail("package test", f"interrupted ({e})")
    except Exception as e:  # noqa: BLE001 - reported, then torn down
        r.fail("package test", f"{type(e).__name__}: {e}")
    finally:
        finish(r, lab, timings, keep, swarm_before)
    return summary(r, timings)


if __name__ == "__main__":
    sys.exit(main())
