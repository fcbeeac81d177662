"""The stage table (comparisons/stages): its attribution rules, and a tiny run end to end.

No speed is asserted: only the table's structure, and that each split adds
up within the method's own bounds (sampled stages sum to the measured total;
the in-process floors fit within it).
"""

from __future__ import annotations

import json
import os
import urllib.request

import pytest

from comparisons import wrk
from comparisons.childproc import ROOT
from comparisons.stages import ab, floors, oncpu, sampling
from comparisons.stages.__main__ import main
from comparisons.stages.report import Level, Results, Split, load

ENGINE_FILE = "flash_green/engines/_reactor.py"


def line_of(path: str, text: str) -> int:
    """The number of the first line of `path` (under ROOT) containing `text`."""
    with open(os.path.join(ROOT, path)) as f:
        for number, line in enumerate(f, 1):
            if text in line:
                return number
    raise AssertionError(f"{text!r} not in {path}")


def frame(function: str, path: str, text: str = "") -> sampling.Frame:
    return sampling.Frame(function, path, line_of(path, text) if text else 1)


LOOP = frame("Reactor.run_loop", ENGINE_FILE, "ready = poll(self.poll_timeout())")
READ = frame("Channel.on_readable", ENGINE_FILE, "data = self.sock.recv(RECV_SIZE)")
FLUSH_SEND = frame("Channel.flush", ENGINE_FILE, "sent = send(out)")
FLUSH_NEXT = frame("Channel.flush", ENGINE_FILE, "out = next(pending, None)")


def test_classify_names_the_stage_of_our_frames_at_any_depth():
    parse = frame("ServerConnection._parse_head", "flash_green/http/connection.py")
    unquote = sampling.Frame("unquote", "/usr/lib/python3.11/urllib/parse.py", 1)
    environ = frame("WSGIContext.environ", "flash_green/wsgi.py")
    respond = frame("ServerConnection.respond", "flash_green/http/connection.py")
    assert sampling.classify([LOOP, READ, parse]) == "parse"
    assert sampling.classify([LOOP, environ, unquote]) == "environ"
    assert sampling.classify([LOOP, respond, frame("build_head", "flash_green/http/response.py")]) == "head"
    assert sampling.classify([LOOP, frame("Exchange._run_list", "flash_green/wsgi.py")]) == "app"
    assert sampling.classify([LOOP, frame("hello", "flash_green/apps/demo.py")]) == "app"


def test_classify_reads_socket_calls_from_the_line_through_wrappers_only():
    wrapper = sampling.Frame("socket.send", "/usr/lib/python3.11/site-packages/gevent/_socketcommon.py", 1)
    assert sampling.classify([LOOP, FLUSH_SEND]) == "send"
    assert sampling.classify([LOOP, READ]) == "recv"
    assert sampling.classify([LOOP, FLUSH_SEND, wrapper]) == "send"
    assert sampling.classify([LOOP]) == "poll"
    resume = frame("Kernel._run_ready", "tasklets/kernel.py", "trap = task._gen.send(task._value)")
    assert sampling.classify([LOOP, resume]) == "scheduling"  # a generator's send is a resume
    # Engine code under the loop's poll line is the engine's, not epoll_wait's.
    assert sampling.classify([LOOP, FLUSH_NEXT]) == "scheduling"


def test_read_raw_sums_samples_into_shares_that_add_up():
    raw = "\n".join([
        f"{LOOP.function} ({LOOP.path}:{LOOP.line});{READ.function} ({READ.path}:{READ.line}) 3",
        f"{LOOP.function} ({LOOP.path}:{LOOP.line}) 1",
        f"{LOOP.function} ({LOOP.path}:{LOOP.line});build_head (flash_green/http/response.py:1) 4",
    ])
    profile = sampling.read_raw(raw)
    assert profile.samples == 8
    split = profile.split(80.0)
    assert split["recv"] == pytest.approx(30.0) and split["head"] == pytest.approx(40.0)
    assert split["scheduling"] == pytest.approx(10.0)  # poll is a part of scheduling
    assert sum(split.values()) == pytest.approx(80.0)


PERF_SCRIPT = """
\t          157e5f _PyEval_EvalFrameDefault

\tffffffff8207cc74 __tcp_transmit_skb
\tffffffff81e778cf __sys_sendto
\tffffffff81e779a0 __x64_sys_sendto
\tffffffff8223c951 do_syscall_64
\t          10a929 __libc_send

\tffffffff81e778cf __sys_recvfrom
\tffffffff81e779a0 __x64_sys_recvfrom

\tffffffff81e779a0 __x64_sys_epoll_wait

\tffffffff81e74390 handle_softirqs
\tffffffff81e74391 irqentry_exit_to_user_mode
"""


def test_perf_samples_are_divided_by_the_syscall_in_their_kernel_chain():
    cpu = oncpu.read_script(PERF_SCRIPT)
    assert cpu.samples == 5
    assert {part: cpu.parts[part] for part in oncpu.PARTS} == {
        "python": 1, "send": 1, "recv": 1, "poll": 1, "kernel": 1}


def test_floors_measure_every_stage_on_the_real_objects():
    measured = floors.measure(rounds=1, budget=0.01)
    assert set(measured.us) == {*floors.PURE_STAGES, *floors.IO_STAGES}
    assert all(us > 0 for us in measured.us.values()), measured.us
    hello = floors.HelloConnection()
    assert hello.response.startswith(b"HTTP/1.1 200 OK\r\n") and hello.response.endswith(b"Hello, World!")


def test_check_flags_a_split_that_does_not_add_up():
    level = Level(100, {"x": [{"rate": 1.0, "cpu_us_per_request": 50.0, "errors": "", "connections": 100}]})
    stages = {s: 5.0 for s in sampling.STAGES}  # 35 us of a 50 us total
    zero = {s: 0.0 for s in sampling.STAGES}
    split = Split(50.0, stages, zero, samples=10, cpu_samples=10, cpu_us={}, poll_us=0.0, hot=[], hot_lines=[])
    results = Results("cmd", "machine", floors={s: 1.0 for s in (*floors.PURE_STAGES, *floors.IO_STAGES)},
                      levels={"100": level}, splits={"x": split})
    assert results.check()["x"]["adds_up"] is False
    results.splits["x"].stages["scheduling"] = 20.0
    assert results.check()["x"]["adds_up"] is True


@pytest.mark.skipif(not wrk.available(), reason="wrk is not installed")
def test_tiny_run_writes_a_table_whose_stages_add_up(tmp_path, capsys):
    out = tmp_path / "stages"
    assert main(["--tiny", "--engines", "tasklets", "--no-peers", "--out", str(out)]) == 0
    data = json.loads((out / "stages.json").read_text())
    assert set(data["floors"]) == {*floors.PURE_STAGES, *floors.IO_STAGES}
    (run,) = data["levels"]["100"]["runs"]["tasklets"]
    assert run["rate"] > 0 and run["cpu_us_per_request"] > 0 and run["connections"] == 100
    markdown = (out / "stages.md").read_text()
    assert "| server | c | req/s | CPU us/req | parse | environ | app | head | recv | send | scheduling |" in markdown
    if not (sampling.available() and oncpu.available()):
        assert any("py-spy" in line for line in data["skipped"])
        return
    split = data["splits"]["tasklets"]
    assert set(split["stages"]) == set(sampling.STAGES)
    assert split["samples"] > 0
    check = load(str(out / "stages.json")).check()["tasklets"]
    assert check["adds_up"] and check["floor_within_total"], check



def test_ab_serves_each_tree_from_its_own_code():
    """`comparisons.stages.ab`: a git revision is exported to a directory of
    its own, and a tree's server imports that tree, not this checkout
    (`python -P`: the working directory is not put first on sys.path)."""
    tree = ab.resolve("head=HEAD")
    assert tree.label == "head" and tree.path != ROOT
    assert ab.resolve(ROOT) == ab.Tree(ROOT, ROOT)
    demo = os.path.join(tree.path, "flash_green", "apps", "demo.py")
    with open(demo) as f:
        source = f.read()
    assert "Hello, World!" in source
    with open(demo, "w") as f:
        f.write(source.replace("Hello, World!", "Hello, tree!!"))
    running = ab.launch(ab.server(tree, "tasklets", ()).argv)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{running.port}/", timeout=10) as page:
            assert page.read() == b"Hello, tree!!"
    finally:
        running.stop()
