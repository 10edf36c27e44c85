#!/usr/bin/env python3
"""The quickstart test behind ansible/test/quickstart: README.md's quickstart, as written, on six
Debian hosts.

Reads the quickstart section of README.md, fails if its shape changed (a step without the code
it had), and runs every command it gives on the hosts it names: `m1 m2 m3` (managers) and
`w1 w2 w3` (workers), Debian bookworm test hosts (the cluster test's recipe: debootstrap +
docker import, systemd as init, each with its own Docker Engine) with Berth's packages
installed. README's addresses `10.0.0.N` become the test network's `<subnet>.N`; each step's
`N=…`/`A=…` line is set per host as the step says. Nothing else is rewritten: the flags, the
unit files, the stack file and the API calls are README's.

What it cannot run as written, and does instead (said in its output):
- `mongo:7` cannot be pulled here: every host gets a busybox stand-in tagged `mongo:7`
  (test/standin.sh: it serves Mongo's port and marks its data directory), so the replica set is
  not initiated (`rs.initiate` is not run).
- "Power off the node": the test host's container is killed.

Checks: the stack's three slots run, one per zone, on Berth volumes; `/v1/plan` and
`/v1/explain/demo_mongo` answer with the token; after the node running `demo_mongo-1` is
killed, `/v1/failovers` shows its failover and the slot runs again on another node (the other
node of its zone when that one is Ready by then, which the output says). Removes everything it made; prints `N passed, M failed, K skipped` last.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from cluster_test import (REPO, CheckFailed, Lab, base_rootfs, begin_run, ensure, finish, poll, run, say, sh,
                          standin_images, start_hosts, summary)
from packages_test import build_debs, install_and_check, reinstall_and_remove

HOSTS = [("m1", "managers", 11, "a"), ("m2", "managers", 12, "b"), ("m3", "managers", 13, "c"),
         ("w1", "workers", 21, "a"), ("w2", "workers", 22, "b"), ("w3", "workers", 23, "c")]
README_NET = "10.0.0."
# Where the package test's checks run: the install before any secret, and at the end an
# upgrade and a removal (m3 instead if m2 was the node killed in step 8).
PACKAGE_HOST = "m2"


class Step:
    def __init__(self, number: int, text: str) -> None:
        self.number = number
        self.text = text
        self.blocks = [(lang, body) for lang, body in re.findall(r"```(\w*)\n(.*?)```", text, re.S)]
        # Inline code outside the fenced blocks: the commands the prose gives.
        prose = re.sub(r"```.*?```", "", text, flags=re.S)
        self.inline = re.findall(r"`([^`\n]+)`", prose)

    def block(self, lang: str) -> str:
        found = [b for lg, b in self.blocks if lg == lang]
        if len(found) != 1:
            raise CheckFailed(f"README quickstart step {self.number} has {len(found)} {lang} blocks, the test "
                              f"expects 1: update the test with the README")
        # README indents the blocks under the list item.
        return "\n".join(line[3:] if line.startswith("   ") else line for line in found[0].splitlines()) + "\n"

    def command(self, prefix: str) -> str:
        found = [c for c in self.inline if c.startswith(prefix)]
        if not found:
            raise CheckFailed(f"README quickstart step {self.number} no longer gives `{prefix}…`: update the test")
        return found[0]


def quickstart_steps() -> dict[int, Step]:
    readme = (REPO / "README.md").read_text()
    m = re.search(r"^## Quickstart[^\n]*\n(.*?)^## ", readme, re.S | re.M)
    if not m:
        raise CheckFailed("README.md has no '## Quickstart' section")
    parts = re.split(r"^(\d+)\. \*\*", m.group(1), flags=re.M)
    steps = {int(n): Step(int(n), body) for n, body in zip(parts[1::2], parts[2::2])}
    if sorted(steps) != list(range(1, 9)):
        raise CheckFailed(f"README quickstart has steps {sorted(steps)}, the test follows 1-8: update the test")
    return steps


def set_var(script: str, var: str, value: str, step: int) -> str:
    """Sets a step's `VAR=…` assignment for the host it runs on (README gives one host's)."""
    new, n = re.subn(rf"\b{var}=[^\s]+", f"{var}={value}", script, count=1)
    if n != 1:
        raise CheckFailed(f"README quickstart step {step} no longer sets {var}=: update the test")
    return new


def main() -> int:
    cache, r, timings, swarm_before, run_id = begin_run()
    keep = os.environ.get("BERTH_TEST_KEEP") == "1"
    lab = Lab(run_id, 0, 0)
    lab.prefix = f"berth-qs-{run_id}"
    lab.hosts = [{"name": n, "group": g, "octet": o, "zone": z} for n, g, o, z in HOSTS]
    say(f"run {run_id}: README's quickstart on m1 m2 m3 w1 w2 w3; host engine Swarm: {swarm_before}")
    try:
        steps = r.check("README's quickstart has the steps and code the test follows",
                        lambda: quickstart_steps())
        if not steps:
            raise CheckFailed("the quickstart could not be read")
        debs = build_debs(timings)
        with timings.phase("base image, stand-in for mongo:7"):
            tar = base_rootfs(cache, True)
            image = f"{lab.prefix}-host:bookworm"
            with open(tar, "rb") as f:
                subprocess.run(["docker", "import", "-c", 'CMD ["/sbin/init"]', "-", image], stdin=f, check=True,
                               stdout=subprocess.DEVNULL)
            lab.images.append(image)
            archive, refs = standin_images(lab)
            mongo = refs["apps_mongo_image"]
        with timings.phase("six hosts up: Docker Engine, the packages, mongo:7 stand-in"):
            subnet = start_hosts(lab, image)
            net = subnet.rsplit(".", 1)[0] + "."
            c = {h["name"]: lab.container(h["name"]) for h in lab.hosts}
            addr = {h["name"]: h["address"] for h in lab.hosts}
            names = " ".join(f"/tmp/{d.name}" for d in debs)

            def prepare(h: str) -> None:
                sh(c[h], "mkdir -p /etc/docker && echo '{\"storage-driver\": \"vfs\"}' > /etc/docker/daemon.json")
                sh(c[h], "DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
                         "docker.io curl >/dev/null", timeout=900)
                for d in debs:
                    run(["docker", "cp", str(d), f"{c[h]}:/tmp/{d.name}"])
                run(["docker", "cp", str(archive), f"{c[h]}:/tmp/standins.tar"])
                if h != PACKAGE_HOST:
                    sh(c[h], f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {names} >/dev/null", timeout=900)
                poll(lambda: ensure(sh(c[h], "docker info >/dev/null 2>&1 && echo up", check=False).strip() == "up",
                                    f"dockerd on {h} is not up"), 120)
                sh(c[h], f"docker load -q -i /tmp/standins.tar >/dev/null && docker tag {mongo} mongo:7", timeout=300)

            with ThreadPoolExecutor(3) as pool:
                list(pool.map(prepare, c))
        # The package test's checks, on one of the hosts: what apt put there before any secret.
        install_and_check(r, timings, c[PACKAGE_HOST], names)

        def ready(h: str) -> str:
            """berth run's /v1/ready status on h: `ready` (elected), `standby`, or why not."""
            got = sh(c[h], f"curl -s -m 5 http://{addr[h]}:9440/v1/ready", check=False)
            try:
                return json.loads(got).get("status", got)
            except json.JSONDecodeError:
                return f"no answer ({got.strip()[:80]})"

        def on(h: str, script: str, timeout: float = 180) -> str:
            """A README command on host h, with README's addresses the test network's."""
            return sh(c[h], f"cd /root && {script.replace(README_NET, net)}", timeout=timeout)

        with timings.phase("steps 1-6: Swarm, token, credentials, control, agents, berth run"):
            def swarm():
                on("m1", steps[1].command("docker swarm init"))
                join = {role: on("m1", f"docker swarm join-token -q {role}").strip() for role in ("manager", "worker")}
                for h, group, _, _ in HOSTS[1:]:
                    role = "manager" if group == "managers" else "worker"
                    on(h, f"docker swarm join --token {join[role]} {addr['m1']}:2377")
                on("m1", steps[1].block("sh"))
                nodes = on("m1", "docker node ls --format '{{.Hostname}} {{.ManagerStatus}}'")
                zones = on("m1", "for n in m1 m2 m3 w1 w2 w3; do docker node inspect -f "
                                 "'{{.Description.Hostname}}={{.Spec.Labels.zone}}' $n; done").split()
                ensure(zones == ["m1=a", "m2=b", "m3=c", "w1=a", "w2=b", "w3=c"], f"zones: {zones}")
                return f"{len(nodes.splitlines())} nodes; zones {' '.join(zones)}"
            r.check("Step 1: the Swarm of three managers and three workers, in three zones", swarm)

            def token():
                on("m1", steps[2].block("sh"))
                t = sh(c["m1"], "cat /etc/berth/token").strip()
                for h in ("m2", "m3"):
                    sh(c[h], f"umask 077; printf %s {t} > /tmp/t && "
                             "install -o root -g berth -m 0640 /tmp/t /etc/berth/token && rm /tmp/t")
                ensure(len(t) == 64, f"token of {len(t)} characters")
                return "made on m1, copied to m2 and m3 (root:berth 0640)"
            r.check("Step 2: the cluster token", token)

            def credentials():
                on("m1", steps[3].block("sh"))
                for h in c:
                    cred = sh(c["m1"], f"cat /root/{h}.cred")
                    ensure(cred.strip(), f"{h}.cred is empty")
                    sh(c[h], f"umask 077; printf '%s\\n' '{cred.strip()}' > /etc/berth/node.cred")
                return "one per node, copied to /etc/berth/node.cred"
            r.check("Step 3: a credential per node", credentials)

            def control():
                for i, h in enumerate(("m1", "m2", "m3"), 1):
                    script = set_var(set_var(steps[4].block("sh"), "N", str(i), 4), "A", addr[h], 4)
                    on(h, script)

                def leader():
                    auth = '-H "Authorization: Bearer $(cat /etc/berth/token)"'
                    raft = json.loads(on("m1", f"curl -sf -m 5 {auth} http://{addr['m1']}:4523/v1/berth/raft"))
                    ensure(raft.get("leader") is not None, f"no Raft leader: {raft}")
                    return raft
                raft = poll(leader, 90)
                return f"Raft leader {raft.get('leader')}"
            r.check("Step 4: the control service, replicated on m1 m2 m3", control)

            def agents():
                for h in c:
                    on(h, set_var(steps[5].block("sh"), "A", addr[h], 5))
                auth = '-H "Authorization: Bearer $(cat /etc/berth/token)"'

                def alive():
                    # Only the Raft leader answers (the others: 503 naming it).
                    for m in ("m1", "m2", "m3"):
                        got = on("m1", f"curl -s -m 5 {auth} http://{addr[m]}:4523/v1/berth/nodes")
                        try:
                            nodes = json.loads(got)
                        except json.JSONDecodeError:
                            continue
                        if isinstance(nodes, list):
                            break
                    else:
                        raise CheckFailed("no control member answers /v1/berth/nodes")
                    up = sorted(n["node"] for n in nodes if n.get("alive"))
                    ensure(len(up) == 6, f"{len(up)} of 6 agents alive: {nodes}")
                    return up
                poll(alive, 90)
                return "all six agents alive, each holding its lease"
            r.check("Step 5: the agents on every host", agents)

            def berth_run():
                for h in ("m1", "m2", "m3"):
                    on(h, set_var(steps[6].block("sh"), "A", addr[h], 6))

                def one_leads():
                    states = {h: ready(h) for h in ("m1", "m2", "m3")}
                    ensure(sorted(states.values()) == ["ready", "standby", "standby"], f"/v1/ready: {states}")
                    return states
                return f"/v1/ready {poll(one_leads, 90)} (one leads, the others stand by)"
            r.check("Step 6: berth run on m1 m2 m3, one elected", berth_run)

        auth = steps[8].command("AUTH=")
        leader = {"host": "m1"}

        def find_leader(exclude: str | None = None) -> str:
            for h in ("m1", "m2", "m3"):
                if h != exclude and ready(h) == "ready":
                    return h
            raise CheckFailed("no berth run is ready (elected) at /v1/ready")

        def placement(via: str) -> dict[str, str]:
            lines = on(via, "for s in 1 2 3; do docker service ps demo_mongo-$s --filter desired-state=running "
                            "--format \"$s {{.Node}} {{.CurrentState}}\"; done").splitlines()
            return {ln.split()[0]: ln.split()[1] for ln in lines if " Running " in f" {ln} "}

        with timings.phase("step 7: the stack"):
            def stack():
                sh(c["m1"], f"cat > /root/mongo.yml <<'EOF'\n{steps[7].block('yaml')}EOF")
                on("m1", steps[7].command("docker stack deploy"), timeout=300)

                def running():
                    p = placement("m1")
                    ensure(sorted(p) == ["1", "2", "3"], f"slots running: {p}")
                    zones = sorted(dict(HOSTS_ZONE)[n] for n in p.values())
                    ensure(zones == ["a", "b", "c"], f"one slot per zone: {p}")
                    return p
                p = poll(running, 240, 5)
                vols = {s: on(n, f"docker volume inspect -f '{{{{.Driver}}}}' mongo-data-{s}").strip()
                        for s, n in p.items()}
                ensure(set(vols.values()) == {"berth"}, f"volume drivers: {vols}")
                say("  (mongo:7 is a stand-in here: the replica set is not initiated)")
                return f"slots on {p}; volumes mongo-data-1..3 on the berth driver"
            placed = r.check("Step 7: the stack's three slots run, one per zone, on Berth volumes", stack)

        def watch():
            ensure(placed, "the stack did not run")
            leader["host"] = find_leader()
            via = leader["host"]
            plan = on(via, f"{auth}; {steps[8].command('curl -s -H').replace(README_NET + '11', addr[via])}")
            ensure("demo_mongo" in plan, f"/v1/plan: {plan[:500]}")
            explain = on(via, f"{auth}; curl -sf -H \"$AUTH\" {addr[via]}:9440/v1/explain/demo_mongo")
            ensure("demo_mongo" in explain or "mongo" in explain, f"/v1/explain: {explain[:500]}")
            victim = leader["victim"] = placement(via)["1"]
            peer = next(n for n, _, _, z in HOSTS if z == dict(HOSTS_ZONE)[victim] and n != victim)
            killed = time.monotonic()
            say(f"  killing {victim} (runs demo_mongo-1); its zone's other node is {peer}")
            run(["docker", "kill", c[victim]])
            if victim == via:
                via = poll(lambda: find_leader(exclude=victim), 120, 3)
            failovers = [cmd for cmd in steps[8].inline if "/v1/failovers" in cmd]
            ensure(failovers, "step 8 no longer follows /v1/failovers")
            cmd = failovers[0].replace(README_NET + "11", addr[via])

            def moved():
                p = placement(via)
                ensure(p.get("1") not in (None, victim), f"demo_mongo-1 on {p.get('1')}, waiting for a new node")
                return p
            p = poll(moved, 240, 3)
            took = time.monotonic() - killed
            log = on(via, f"{auth}; {cmd}")
            ensure("demo_mongo" in log and "node-down" in log,
                   f"/v1/failovers does not show the node-down failover of demo_mongo: {log[:800]}")
            ps = on(via, steps[8].command("docker service ps"))
            ensure(p["1"] in ps, f"docker service ps: {ps}")
            # README: the other node of its zone if it is Ready by then; a worker still
            # reconnecting after Swarm's own election (when the killed node led it) is not.
            where = "the other node of its zone" if p["1"] == peer else f"{p['1']}, not {peer} (not Ready in time)"
            return f"demo_mongo-1 recreated on {where} {took:.0f} s after {victim} died (recreate-grace 30 s)"
        r.check("Step 8: the plan and explain answer; a killed node's member is recreated elsewhere", watch)

        # The package test's upgrade and removal, on a manager the quickstart configured.
        pkg = PACKAGE_HOST if PACKAGE_HOST != leader.get("victim") else "m3"
        auth_h = '-H "Authorization: Bearer $(cat /etc/berth/token)"'

        def healthy_again():
            states = sh(c[pkg], "systemctl is-active berth-volume-control berth-volume-agent berth",
                        check=False).split()
            ensure(states == ["active"] * 3, f"control, agent, berth on {pkg}: {states}")
            node = sh(c[pkg], "docker info --format '{{.Swarm.NodeID}}'").strip()
            answers = [sh(c[pkg], f"curl -s -m 5 {auth_h} http://{addr[m]}:4523/v1/berth/nodes", check=False)
                       for m in ("m1", "m2", "m3") if m != leader.get("victim")]
            nodes = next((json.loads(a) for a in answers if a.startswith("[")), None)
            ensure(nodes is not None, f"no control member lists the nodes: {answers}")
            ensure(any(n["node"] == node and n["alive"] for n in nodes), f"{pkg} is not alive: {nodes}")
            ensure(ready(pkg) in ("ready", "standby"), f"berth run on {pkg}: {ready(pkg)}")
        reinstall_and_remove(r, timings, c[pkg], names, healthy_again, cleanup="true")
    except CheckFailed as e:
        r.fail("quickstart test", str(e))
    except KeyboardInterrupt as e:
        r.fail("quickstart test", f"interrupted ({e})")
    except Exception as e:  # noqa: BLE001 - reported, then torn down
        r.fail("quickstart test", f"{type(e).__name__}: {e}")
    finally:
        finish(r, lab, timings, keep, swarm_before)
    return summary(r, timings)


HOSTS_ZONE = [(n, z) for n, _, _, z in HOSTS]

if __name__ == "__main__":
    sys.exit(main())
