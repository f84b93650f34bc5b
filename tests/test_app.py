"""app.py: the gradio chat answered through gradio_client, and once through a real browser."""
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from conftest import REPO, free_port


def start_app(cwd, *args):
    port = free_port()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "app.py"), "--port", str(port), *args], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return proc, url
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read())
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("app did not start")


@pytest.fixture(scope="module")
def app(trained):
    proc, url = start_app(trained, "--root", "out")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def ask(url, message, checkpoint="out/sft", max_new_tokens=40):
    from gradio_client import Client
    client = Client(url, verbose=False)
    job = client.submit(message, checkpoint, 0.7, 50, 0.9, max_new_tokens, api_name="/chat")
    updates = list(job)
    return updates


def test_app_binds_to_localhost_by_default_and_lists_checkpoints(trained):
    from app import find_checkpoints
    assert find_checkpoints(str(trained / "out"))[0].endswith("sft")
    src = open(os.path.join(REPO, "app.py"), encoding="utf-8").read()
    assert 'default="127.0.0.1"' in src and "share=args.share" in src


def test_streamed_answer_through_gradio_client(app):
    updates = ask(app, "郭靖是谁？")
    assert len(updates) > 1  # streamed: several growing partial replies
    assert updates[-1].startswith(updates[0]) and len(updates[-1]) > len(updates[0])
    assert "\ufffd" not in updates[-1]


def test_two_clients_at_once_both_get_answers(app):
    results = {}

    def worker(i):
        results[i] = ask(app, ["郭靖是谁？", "杨过和谁在一起？"][i])[-1]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(results) == {0, 1} and all(r.strip() for r in results.values())


def test_polite_messages_never_a_stack_trace(app):
    assert "请输入" in ask(app, "   ")[-1]
    assert "太长" in ask(app, "郭" * 5000)[-1]
    unknown = ask(app, "郭靖是谁？", checkpoint="out/nothing")[-1]
    assert "无法加载" in unknown and "Traceback" not in unknown


def test_app_without_checkpoints_starts_and_says_how_to_make_one(tmp_path):
    proc, url = start_app(tmp_path)
    try:
        reply = ask(url, "你好", checkpoint=None)[-1]
        assert "python train.py config/pretrain.py" in reply
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_browser_types_a_question_and_reads_the_streamed_answer(app):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if not chromium or sync_playwright is None:
        if os.environ.get("MINIGLM_REQUIRE_BROWSER") == "1":
            pytest.fail("MINIGLM_REQUIRE_BROWSER=1 but chromium or playwright is missing")
        pytest.skip("needs Debian's chromium and the playwright package (requirements-browser.txt)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(app)
        box = page.get_by_role("textbox").first
        box.fill("郭靖是谁？")
        box.press("Enter")
        bot = page.locator(".message.bot, [data-testid='bot']").last
        bot.wait_for(timeout=60000)
        deadline = time.time() + 60
        text = ""
        while time.time() < deadline:
            text = bot.inner_text().strip()
            if text and page.get_by_role("button", name="Stop").count() == 0:
                break
            time.sleep(0.5)
        page.screenshot(path=os.path.join(os.environ.get("TMPDIR", "/tmp"), "miniglm_app.png"))
        browser.close()
    assert text and "\ufffd" not in text and "郭靖是谁" not in text


# ---- only checkpoints under --root, each loaded once (issue 13) ------------------------------------------------
def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def counting_loads(monkeypatch):
    import app as app_module
    loads, real = [], app_module.Engine.from_checkpoint

    def load(cls, path, device="auto"):
        loads.append(path)
        return real(path, device)

    monkeypatch.setattr(app_module.Engine, "from_checkpoint", classmethod(load))
    return loads


def test_forty_spellings_of_one_checkpoint_load_it_once(trained, monkeypatch):
    from app import ChatBackend
    monkeypatch.chdir(trained)
    loads = counting_loads(monkeypatch)
    backend = ChatBackend("out", device="cpu")
    first = backend.engine("out/sft")
    rss_before = rss_bytes()
    spellings = (["out/" + "./" * i + "sft" for i in range(1, 16)] + ["./" * i + "out//sft/" for i in range(1, 11)]
                 + [str(trained / "out") + "/" + "./" * i + "sft" for i in range(10)]
                 + ["out/../out/sft", "out/sft/best", "out/sft/../sft", "out/pre/../sft", "out/sft/."])
    assert len(set(spellings)) == 40
    for s in spellings:
        assert backend.engine(s) is first
    assert loads == [os.path.realpath(trained / "out/sft/best")] and len(backend.engines) == 1
    assert rss_bytes() - rss_before < 10 * 2 ** 20  # flat (each load of even this tiny model costs megabytes)
    stream = backend.respond("郭靖是谁？", [], "out/sft", 0.7, 50, 0.9, 40)
    next(stream)  # a reply is being generated: the lock is free for other clients meanwhile
    assert backend.lock.acquire(timeout=1)
    backend.lock.release()
    stream.close()
    backend.engine("out/pre")
    backend.engine("out/sft/latest")
    assert len(loads) == 3 and len(backend.engines) == 2  # a bounded cache: the least recently used is dropped


def test_checkpoints_outside_root_are_refused_politely_and_never_loaded(trained, tmp_path, monkeypatch):
    from app import ChatBackend
    from checkpoint import CheckpointError
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    shutil.copytree(trained / "out/pre", outside)
    shutil.copytree(trained / "out/sft/best", root / "damaged" / "best")
    open(root / "damaged/best/model.safetensors", "r+b").truncate(1000)
    os.symlink(outside, root / "linked")  # a link under root that leads out of it
    loads = counting_loads(monkeypatch)
    backend = ChatBackend(str(root), device="cpu")
    for path in (str(outside), str(root / ".." / "elsewhere"), str(root / "linked"), "/", "\0"):
        reply = list(backend.respond("郭靖是谁？", [], path, 0.7, 50, 0.9, 20))[-1]
        assert "只能使用" in reply and "Traceback" not in reply
        if path != "\0":
            with pytest.raises(CheckpointError, match="not under"):
                backend.engine(path)
    reply = list(backend.respond("郭靖是谁？", [], str(root / "damaged"), 0.7, 50, 0.9, 20))[-1]
    assert "无法加载" in reply and "model.safetensors" in reply and "\n" not in reply
    assert str(root) in reply or "damaged" in reply
    assert loads == [os.path.realpath(root / "damaged/best")]  # the damaged one was tried; nothing outside
    bad = list(backend.respond("郭靖是谁？", [], str(root / "damaged"), 0.7, -5, 0.9, 20))[-1]
    assert "top_k=-5" in bad


def test_server_refuses_a_checkpoint_outside_its_root(app, trained):
    outside = trained / "faults_outside_run"
    if not outside.exists():
        shutil.copytree(trained / "out/pre", outside)
    for spelling in (str(outside), "out/../faults_outside_run"):
        reply = ask(app, "郭靖是谁？", checkpoint=spelling)[-1]
        assert "只能使用" in reply and "Traceback" not in reply
    assert ask(app, "郭靖是谁？", checkpoint="out/./sft/")[-1].strip()  # another spelling of a listed run works
