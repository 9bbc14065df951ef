"""The labelling page of `rlaif service` in headless Chromium: keyboard labelling, responses
shown as text (markup in them runs nothing), side-by-side layout in a real screenshot, gold
items that exclude a careless annotator, and the agreement figures on the stats page against
values worked out by hand."""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from browser import Chromium
from test_service import running_service

from align.labeling.queue import LabelSettings, enqueue, queue_item
from datagen import store

pytestmark = pytest.mark.slow

XSS_A = '<script>window.__pwned = "script"</script>Paris is the capital.'
XSS_B = '<img src="/nowhere.png" onerror="window.__pwned = \'img\'">Lyon, I think.'
VIRTUAL_KEYS = {"Enter": 13, "Backspace": 8}


@pytest.fixture(scope="module")
def browser():
    with Chromium(width=1280, height=900) as chromium:
        yield chromium


def queue(db_path: Path, pairs: list[dict], gold: list[dict] = (), required: int = 1,
          **settings) -> None:
    db = store.open_db(db_path)
    items = [queue_item(p, f"pair {i}", False, required) for i, p in enumerate(pairs)]
    items += [queue_item(g, f"gold {i}", True, required) for i, g in enumerate(gold)]
    enqueue(db, items, LabelSettings(**settings))
    db.close()


def press(page, key: str) -> None:
    """A real key press (keyDown with its text, keyUp) through the DevTools input domain."""
    code = VIRTUAL_KEYS[key] if key in VIRTUAL_KEYS else ord(key.upper())
    text = "\r" if key == "Enter" else ("" if key in VIRTUAL_KEYS else key)
    down = {"type": "keyDown" if text else "rawKeyDown", "key": key,
            "windowsVirtualKeyCode": code, "nativeVirtualKeyCode": code}
    if text:
        down["text"] = text
    page.call("Input.dispatchKeyEvent", down)
    page.call("Input.dispatchKeyEvent", {"type": "keyUp", "key": key,
                                         "windowsVirtualKeyCode": code})


SHOWN = """(() => {
  const done = !document.getElementById('done').hidden;
  const work = !document.getElementById('work').hidden;
  if (done) return {done: true};
  if (!work) return null;
  return {prompt: document.getElementById('prompt').textContent,
          responses: [...document.querySelectorAll('.response-text')].map(e => e.textContent)};
})()"""


def wait_shown(page, previous: str | None = None, timeout: float = 15) -> dict:
    """What the page shows once it shows something new: {done} or {prompt, responses}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = page.eval(SHOWN)
        if state and (state.get("done") or state.get("prompt") not in (None, "", previous)):
            return state
        time.sleep(0.03)
    raise AssertionError(f"the page did not move on from {previous!r}: {page.console_errors}")


def login(page, base: str, token: str) -> None:
    """Log in on the page's form (the token goes in the form, never in a URL)."""
    page.goto(f"{base}/label/login")
    deadline = time.monotonic() + 15
    while not page.eval("!document.getElementById('login').hidden"):
        assert time.monotonic() < deadline, page.console_errors
        time.sleep(0.03)
    page.eval(f"document.getElementById('token-input').value = {json.dumps(token)};"
              "document.querySelector('#login-form button').click()")


def label_all(page, svc, annotator: str, answer: Callable[[str], str]) -> list[str]:
    """Log in as an annotator and answer every item with the keyboard."""
    login(page, svc.url, svc.tokens[annotator])
    prompts, previous = [], None
    while True:
        state = wait_shown(page, previous)
        if state.get("done"):
            return prompts
        previous = state["prompt"]
        prompts.append(previous)
        press(page, answer(previous))
        press(page, "Enter")


def wait_for_page(page, path: str, timeout: float = 15) -> None:
    """Wait until the page's location is ``path`` (the login moved it there)."""
    deadline = time.monotonic() + timeout
    while page.eval("location.pathname") != path:
        assert time.monotonic() < deadline, page.console_errors
        time.sleep(0.03)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB(A), non-interlaced PNG (what Chromium writes) into rows of pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks, header = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(chunks))
    stride = width * bpp
    rows, prior = [], bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            left = line[x - bpp] if x >= bpp else 0
            up, corner = prior[x], prior[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + left) & 255
            elif kind == 2:
                line[x] = (line[x] + up) & 255
            elif kind == 3:
                line[x] = (line[x] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[x] = (line[x] + (left if pa <= pb and pa <= pc else
                                      up if pb <= pc else corner)) & 255
        rows.append(bytes(line) if bpp == 3 else bytes(
            b for i in range(0, stride, 4) for b in line[i:i + 3]))
        prior = line
    return width, height, rows


def dark_pixels(rows: list[bytes], box: dict) -> int:
    """Pixels darker than mid-grey inside a CSS-pixel box (device scale 1)."""
    count = 0
    for y in range(int(box["top"]) + 2, min(int(box["bottom"]) - 2, len(rows))):
        row = rows[y]
        for x in range(int(box["left"]) + 2, int(box["right"]) - 2):
            if sum(row[3 * x:3 * x + 3]) < 3 * 110:
                count += 1
    return count


def test_keyboard_labelling_shows_markup_as_text_side_by_side(browser, tmp_path):
    db = tmp_path / "page.db"
    queue(db, [
        {"id": "xss", "prompt": "What is the capital of France? <b>bold?</b>",
         "response_a": XSS_A, "response_b": XSS_B},
        {"id": "two", "prompt": "Name a prime number.", "response_a": "4",
         "response_b": "7"},
        {"id": "three", "prompt": "Say hello.", "response_a": "hello",
         "response_b": "hello!"},
        {"id": "rank", "prompt": "Order these.", "responses": ["x one", "y two", "z three"]},
    ])
    with running_service(db, workers=0, users={"kbd": "annotator", "op": "operator"}) as svc:
        page = browser.open("about:blank")
        login(page, svc.url, svc.tokens["kbd"])
        assert "rlaif_" not in page.eval("location.href")  # no secret in the URL
        assert page.eval("document.cookie") == ""  # the session cookie is HttpOnly
        state = wait_shown(page)
        assert state["prompt"] == "What is the capital of France? <b>bold?</b>"
        assert state["responses"] == [XSS_A, XSS_B]  # the characters, as written
        assert page.eval("window.__pwned === undefined")
        assert page.eval("document.querySelectorAll('#work img, #work script, #prompt b')"
                         ".length") == 0
        boxes = page.eval("[...document.querySelectorAll('.response')].map(e => {"
                          "const r = e.getBoundingClientRect(); return {left: r.left, "
                          "right: r.right, top: r.top, bottom: r.bottom, width: r.width}; })")
        assert len(boxes) == 2
        assert page.eval("getComputedStyle(document.getElementById('rank-controls')).display"
                         ) == "none"
        assert boxes[0]["right"] <= boxes[1]["left"] and abs(boxes[0]["top"] - boxes[1]["top"]) < 1
        assert boxes[0]["width"] > 300 and abs(boxes[0]["width"] - boxes[1]["width"]) < 2
        shot = page.screenshot(tmp_path / "label-page.png")
        width, height, rows = png_pixels(shot)
        assert (width, height) == (1280, 900)
        assert len({row[i:i + 3] for row in rows[::7] for i in range(0, len(row), 21)}) > 8
        assert dark_pixels(rows, boxes[0]) > 150 and dark_pixels(rows, boxes[1]) > 150

        press(page, "1")
        assert page.eval("document.querySelector('[data-choice=a]').getAttribute('aria-pressed')"
                         ) == "true"
        press(page, "b")  # changes the mind: B
        press(page, "Enter")
        state = wait_shown(page, state["prompt"])
        assert state["prompt"] == "Name a prime number."
        press(page, "2")
        page.eval("document.getElementById('note').focus()")
        page.call("Input.insertText", {"text": "4 is not prime; "})
        press(page, "a")  # typing in the note is typing, not choosing
        press(page, "1")
        assert page.eval("document.getElementById('note').value") == "4 is not prime; a1"
        assert page.eval("document.querySelector('[data-choice=b]').getAttribute('aria-pressed')"
                         ) == "true"
        press(page, "Enter")  # submits from the note too
        state = wait_shown(page, state["prompt"])
        press(page, "t")
        press(page, "Enter")
        state = wait_shown(page, state["prompt"])
        assert state == {"prompt": "Order these.", "responses": ["x one", "y two", "z three"]}
        tops = page.eval("[...document.querySelectorAll('.response')].map(e => "
                         "Math.round(e.getBoundingClientRect().top))")
        assert len(tops) == 3 and len(set(tops)) == 1
        for key in ("3", "1", "2", "Backspace", "2"):
            press(page, key)
        assert page.eval("document.getElementById('ranking').textContent") == "3 > 1 > 2"
        press(page, "Enter")
        assert wait_shown(page, state["prompt"]) == {"done": True}
        assert page.eval("window.__pwned === undefined")
        assert page.console_errors == []
        assert not any("nowhere.png" in url for url in page.requests)
        with svc.client("op") as client:
            exported = [json.loads(x) for x in client.get("/label/api/export").text.splitlines()]
        assert {r["id"]: r["human"] for r in exported} == {
            "xss": "b", "two": "b", "three": "tie",
            "rank:0-1": "a", "rank:0-2": "b", "rank:1-2": "b"}  # z > x > y
        votes = store.load_rows(store.open_db(db), "label_votes")
        assert {v["note"] for v in votes} == {"", "4 is not prime; a1"}
        page.close()


HAND_PAIRS = [  # prompt, judge preferred, p_a; answers of alice, bob, carol
    ("Which is larger, 3 or 5?", "a", 0.9, "aaa"),
    ("Spell 'cat' backwards.", "b", 0.4, "aab"),
    ("What colour is the sky on a clear day?", "b", 0.2, "bbb"),
    ("Is water wet?", "tie", 0.5, "tbb"),
]
GOLD = [("Gold: 2 + 2 = ?", "4", "5"), ("Gold: capital of Italy?", "Rome", "Milan"),
        ("Gold: opposite of hot?", "cold", "blue")]


def test_gold_flagging_consensus_and_kappa_on_the_stats_page(browser, tmp_path):
    db = tmp_path / "stats.db"
    queue(db, [{"id": f"h{i}", "prompt": prompt, "response_a": f"answer one to {i}",
                "response_b": f"answer two to {i}", "preferred": preferred, "p_a": p_a}
               for i, (prompt, preferred, p_a, _) in enumerate(HAND_PAIRS)],
          gold=[{"id": f"g{i}", "prompt": p, "response_a": good, "response_b": bad,
                 "human": "a"} for i, (p, good, bad) in enumerate(GOLD)],
          required=3, gold_every=1, min_gold=2, gold_threshold=0.7)
    answers = {prompt: votes for prompt, _, _, votes in HAND_PAIRS}
    users = {name: "annotator" for name in ("dave", "alice", "bob", "carol")} | {"op": "operator"}
    with running_service(db, workers=0, users=users) as svc:
        page = browser.open("about:blank")
        careless = label_all(page, svc, "dave", lambda p: "b" if p.startswith("Gold") else "a")
        assert careless[0].startswith("Gold") and len(careless) >= 6
        for index, name in enumerate(("alice", "bob", "carol")):
            seen = label_all(page, svc, name, lambda p, i=index: (
                "a" if p.startswith("Gold") else answers[p][i]))
            assert sorted(p for p in seen if not p.startswith("Gold")) == sorted(answers)
            assert any(p.startswith("Gold") for p in seen)  # gold mixed in, unannounced
        login(page, svc.url, svc.tokens["op"])  # the stats are not the annotators'
        wait_for_page(page, "/label")
        page.goto(f"{svc.url}/label/stats")
        text = page.eval("(() => { const t = id => document.getElementById(id).textContent;"
                         "return {fleiss: t('fleiss-kappa'), cohen: t('cohen-kappa'),"
                         " accuracy: t('judge-accuracy'), kappa: t('judge-kappa')}; })()")
        # Fleiss by hand: P_i = 1, 1/3, 1, 1/3 -> P = 2/3; shares a 5/12, b 6/12, tie 1/12 ->
        # P_e = 62/144; kappa = (96/144 - 62/144) / (82/144) = 17/41 = 0.415
        assert text["fleiss"] == f"{17 / 41:.3f}" == "0.415"
        # Cohen: alice-bob 0.6, alice-carol 3/11, bob-carol 0.5 -> mean 0.458
        assert text["cohen"] == f"{(0.6 + 3 / 11 + 0.5) / 3:.3f}" == "0.458"
        # judge a b b tie vs humans a a b b: 2 of 4 agree; kappa (1/2 - 6/16) / (10/16) = 0.2
        assert (text["accuracy"], text["kappa"]) == ("0.500", "0.200")
        consensus = page.eval("Object.fromEntries([...document.querySelectorAll("
                              "'#consensus tr[data-pair]')].map(r => [r.dataset.pair, "
                              "r.querySelector('.consensus').textContent]))")
        assert consensus == {"h0": "a", "h1": "a", "h2": "b", "h3": "b"}
        flagged = page.eval("[...document.querySelectorAll('#annotators tr.flagged')]"
                            ".map(r => r.dataset.annotator)")
        assert flagged == ["dave"]
        assert page.eval("document.querySelectorAll('#calibration-plot circle.bin').length") >= 3
        page.screenshot(tmp_path / "stats-page.png", full_page=True)
        assert page.console_errors == []
        page.close()


def test_instructions_default_and_team_edit(browser, tmp_path):
    db = tmp_path / "instr.db"
    users = {"boss": "admin", "reader": "annotator"}
    with running_service(db, workers=0, users=users) as svc:
        page = browser.open("about:blank")
        login(page, svc.url, svc.tokens["boss"])
        wait_for_page(page, "/label")
        page.goto(f"{svc.url}/label/instructions")
        text = page.eval("document.getElementById('instructions-text').textContent")
        for phrase in ("Correctness comes first", "informativeness", "Shorter is not worse",
                       "sparingly", "fail"):
            assert phrase in text
        page.eval("document.getElementById('edit').click()")
        page.eval("document.getElementById('instructions-edit').value = "
                  "'Our rules: <img src=x onerror=alert(1)> correctness first.'")
        page.eval("document.getElementById('save').click()")
        deadline = time.monotonic() + 10
        while page.eval("document.getElementById('save-status').textContent") != "Saved.":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        login(page, svc.url, svc.tokens["reader"])
        deadline = time.monotonic() + 10
        while "Our rules" not in (shown := page.eval(
                "document.getElementById('instructions-text').textContent")):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert shown == "Our rules: <img src=x onerror=alert(1)> correctness first."
        assert page.eval("document.querySelectorAll('img').length") == 0
        assert page.console_errors == []
        page.close()
