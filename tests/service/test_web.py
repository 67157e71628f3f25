"""The web page (GET /, serve/static/) in a real browser: Debian's chromium driven by Playwright against
the real gunicorn server on a loopback port, its corrections kept in a SQLite file of this module's own.
Screenshots go to test-artifacts/web/."""
import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from playwright import sync_api

from testkit import ROOT
from testkit.images import png_bytes as png
from testkit.server import fetch, free_port, server_env, wait_until_ready

# Debian's chromium, never a downloaded browser. `make test` installs it (`make browser`); a missing one is
# a failure here, not a skip: these are the only tests of the page.
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
if not CHROMIUM.exists():
    raise RuntimeError(f"{CHROMIUM} is missing: `make browser` (or apt-get install chromium) installs it")
expect = sync_api.expect
expect.set_options(timeout=30_000)  # 2 shared cores: the first answers can be slow

SHOTS = ROOT / "test-artifacts" / "web"


def dark_on_white(digit, size=200):
    """An MNIST digit (white on black, 28x28) as a person's scan would be: dark ink on white paper."""
    return png(np.asarray(Image.fromarray(255 - digit).resize((size, size), Image.BILINEAR)))


@pytest.fixture(scope="module")
def feedback_url(tmp_path_factory):
    """The store the server keeps corrections in (FEEDBACK_DB_URL), read back here as the operator would."""
    return f"sqlite:///{tmp_path_factory.mktemp('feedback') / 'feedback.db'}"


def stored(feedback_url) -> list[dict]:
    from serve.store import Store

    return Store.open(feedback_url).rows()


@pytest.fixture(scope="module")
def server(bundle, tmp_path_factory, feedback_url):
    """The real server, with the small test model; WEB_BUNDLE names another bundle (`python -m serve bundle
    DIR`): every check here compares the page with the API's own answers, so a real champion passes them
    too, and its screenshots are the README's (docs/web-page.png is drawn-seven.png)."""
    port, log = free_port(), tmp_path_factory.mktemp("web") / "server.log"
    env = server_env(os.environ.get("WEB_BUNDLE") or bundle, WORKERS="1", THREADS="4", FEEDBACK_DB_URL=feedback_url)
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "serve", "--port", str(port)], cwd=ROOT, env=env,
                                   stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, log=log)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    """The page, freshly loaded; a JavaScript error anywhere fails the test."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server + "/")
    yield page
    page.close()
    assert errors == []


@pytest.fixture(scope="module")
def read_right(server, digits, tmp_path_factory):
    """[(PNG path, label)], one per digit class the served model reads right (asked over HTTP)."""
    folder, picks = tmp_path_factory.mktemp("uploads"), []
    for i, (image, label) in enumerate(zip(*digits)):
        data = dark_on_white(image)
        status, body = fetch(server + "/predict", data)
        if status == 200 and json.loads(body)["prediction"] == label:
            (folder / f"{i}.png").write_bytes(data)
            picks.append((folder / f"{i}.png", int(label)))
    assert len(picks) >= 20, "the test model should read most real digits right"
    one_each = {label: path for path, label in reversed(picks)}  # the first right one of each digit
    return [(path, label) for label, path in sorted(one_each.items())]


def draw(page, points):
    """One stroke with the mouse through points given as fractions of the canvas."""
    box = page.locator("#canvas").bounding_box()
    at = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for (ax, ay), (bx, by) in zip(at, at[1:]):
        for t in np.linspace(0.1, 1, 10):  # many small moves, as a hand makes
            page.mouse.move(ax + (bx - ax) * t, ay + (by - ay) * t)
    page.mouse.up()


SEVEN = [(0.28, 0.22), (0.72, 0.22), (0.45, 0.82)]


def canvas_png(page) -> bytes:
    url = page.evaluate("document.getElementById('canvas').toDataURL('image/png')")
    return base64.b64decode(url.split(",")[1])


def test_drawing_a_seven_shows_what_the_api_answers_for_the_canvas(page, server):
    expect(page.locator("#canvas")).to_have_css("touch-action", "none")
    draw(page, SEVEN)
    expect(page.locator("#answer")).to_have_text(re.compile(r"^\d$"))
    drawn = canvas_png(page)
    pixels = np.asarray(Image.open(io.BytesIO(drawn)).convert("RGBA"))
    assert (pixels[0, 0] == 255).all() and (pixels[..., 3] == 255).all()  # opaque white paper ...
    assert (pixels[..., 0] < 60).sum() > 500  # ... with dark ink on it
    api = json.loads(fetch(server + "/predict", drawn)[1])
    expect(page.locator("#answer")).to_have_text(str(api["prediction"]))
    expect(page.locator("#confidence")).to_have_text(f"confidence {100 * api['confidence']:.1f}%")
    expect(page.locator("#chart .bar")).to_have_count(10)
    assert page.locator("#seen").get_attribute("src").startswith("data:image/png;base64,")
    assert page.evaluate("document.getElementById('seen').naturalWidth") == 28
    expect(page.get_by_role("group", name=WRONG)).to_be_visible()  # below: correcting it
    page.screenshot(path=SHOTS / "drawn-seven.png", full_page=True)

    page.get_by_role("button", name="Undo").click()  # the only stroke: back to the start
    expect(page.locator("#answer")).to_have_text("–")
    expect(page.get_by_role("button", name="Undo")).to_be_disabled()
    draw(page, SEVEN)
    expect(page.locator("#answer")).to_have_text(str(api["prediction"]))
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#answer")).to_have_text("–")
    expect(page.locator("#chart-figure")).to_be_hidden()


def test_on_a_phone_the_page_fits_and_draws(browser, server):
    phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        phone.goto(server + "/")
        draw(phone, SEVEN)
        expect(phone.locator("#answer")).to_have_text(re.compile(r"^\d$"))
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scrolling
        phone.screenshot(path=SHOTS / "phone.png", full_page=True)
    finally:
        phone.close()


def test_an_uploaded_digit_is_read_right_and_shown(page, read_right):
    path, label = read_right[len(read_right) // 2]
    page.focus("#source-draw")
    page.keyboard.press("ArrowRight")  # radio buttons: the keyboard switches to Upload
    expect(page.locator("#upload-panel")).to_be_visible()
    expect(page.locator("#draw-panel")).to_be_hidden()
    page.set_input_files("#file", path)
    expect(page.locator("#answer")).to_have_text(str(label))
    expect(page.locator("#preview")).to_be_visible()
    assert page.evaluate("document.getElementById('preview').naturalWidth") == 200
    expect(page.locator("#seen-figure")).to_be_visible()
    page.screenshot(path=SHOTS / "uploaded-digit.png", full_page=True)

    white = path.with_name("white.png")
    white.write_bytes(png(np.full((120, 120), 255, np.uint8)))
    page.set_input_files("#file", white)
    expect(page.locator("#message")).to_have_text("The image looks blank")
    expect(page.locator("#answer")).to_have_text("–")


def test_each_sample_photo_is_read_as_the_api_reads_that_file(page, server):
    """The gallery's sample photos (serve/static/samples/): each click sends the file as an upload, and the
    page shows what the API answers for exactly those bytes. Reached with the keyboard."""
    index = json.loads((ROOT / "serve/static/samples/index.json").read_text())
    page.focus("#source-draw")
    page.keyboard.press("ArrowRight")
    buttons = page.locator("#sample-list button")
    expect(buttons).to_have_count(len(index))
    for k, sample in enumerate(index):
        status, body = fetch(server + "/predict", (ROOT / "serve/static/samples" / sample["file"]).read_bytes(),
                             content_type="application/octet-stream")
        answer = json.loads(body)
        assert status == 200
        expected = str(answer["prediction"]) if answer["prediction"] is not None else "–"
        buttons.nth(k).focus()
        page.keyboard.press("Enter")
        expect(buttons.nth(k)).to_contain_text(sample["caption"])
        expect(page.locator("#preview")).to_be_visible()
        expect(page.locator("#answer")).to_have_text(expected)
    page.screenshot(path=SHOTS / "samples.png", full_page=True)


def test_a_non_image_upload_shows_the_api_error(page, server, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a picture of a digit\n")
    status, body = fetch(server + "/predict", text.read_bytes(), content_type="application/octet-stream")
    assert status == 400
    message = json.loads(body)["error"]["message"]
    page.get_by_text("Upload", exact=True).click()
    page.set_input_files("#file", text)
    expect(page.locator("#message")).to_have_text(message)
    expect(page.locator("#message")).to_have_class("message error")
    expect(page.locator("#upload-stage")).to_be_hidden()  # nothing to show: the browser could not draw it
    page.screenshot(path=SHOTS / "not-an-image.png", full_page=True)


def number_sheet(read_right, server):
    """A page with three real digits side by side that /read finds as three pieces, and its answer."""
    squares = [(20, 30), (160, 50), (300, 20)]  # (x, y) of each 80x80 digit
    for start in range(len(read_right) - 2):
        sheet = np.full((150, 420), 255, np.uint8)
        for (path, _), (x, y) in zip(read_right[start:start + 3], squares):
            sheet[y:y + 80, x:x + 80] = np.asarray(Image.open(path).convert("L").resize((80, 80)))
        api = json.loads(fetch(server + "/read", png(sheet))[1])
        if len(api["digits"]) == 3:
            return png(sheet), api
    raise AssertionError("/read never found the three digits of a sheet")


def test_number_mode_draws_a_box_over_each_digit(page, server, read_right, tmp_path):
    sheet, api = number_sheet(read_right, server)
    (tmp_path / "number.png").write_bytes(sheet)
    page.get_by_text("Upload", exact=True).click()
    page.get_by_text("A number", exact=True).click()
    page.set_input_files("#file", tmp_path / "number.png")
    expect(page.locator("#answer")).to_have_text(api["number"] or "?")
    boxes = page.locator("#upload-stage .box")
    expect(boxes).to_have_count(3)
    expect(page.locator("#digits button")).to_have_count(3)
    image = page.locator("#preview").bounding_box()
    scale = image["width"] / 420
    for i, digit in enumerate(api["digits"]):  # each box is the API's, at the image's displayed size
        x, y, w, h = (v * scale for v in digit["box"])
        box = boxes.nth(i).bounding_box()
        assert box["x"] == pytest.approx(image["x"] + x, abs=1.5) and box["width"] == pytest.approx(w, abs=1.5)
        assert box["y"] == pytest.approx(image["y"] + y, abs=1.5) and box["height"] == pytest.approx(h, abs=1.5)
    page.locator("#digits button").nth(2).click()  # a digit's own probabilities
    expect(page.locator("#digits button").nth(2)).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#chart .bar.best .label")).to_have_text(str(api["digits"][2]["prediction"]))
    page.screenshot(path=SHOTS / "number.png", full_page=True)


# --- "Wrong? It was ...": a correction of a /predict answer, sent with its id, found in the store ----------

WRONG = "Wrong? It was …"
THANKS = re.compile(r"^Thank you! Noted as (.+) \(correction #(\d+)\), waiting for review\.$")


def choices(page):
    return page.get_by_role("group", name=WRONG).get_by_role("button")


def expect_fresh(page):
    """The group offered for the answer on show: all eleven buttons enabled, no thank-you yet."""
    expect(page.get_by_role("group", name=WRONG)).to_be_visible()
    expect(choices(page)).to_have_text([*"0123456789", "not a digit"])
    for k in range(11):
        expect(choices(page).nth(k)).to_be_enabled()
    expect(page.locator("#thanks")).to_have_text("")


def expect_all_disabled(page):
    for k in range(11):
        expect(choices(page).nth(k)).to_be_disabled()


def test_a_drawn_answer_is_corrected_with_the_keyboard_and_found_in_the_store(page, feedback_url):
    before = {row["id"] for row in stored(feedback_url)}
    expect(page.get_by_role("group", name=WRONG)).to_be_hidden()  # no answer, nothing to correct
    draw(page, SEVEN)
    expect(page.locator("#answer")).to_have_text(re.compile(r"^\d$"))
    shown, drawn = page.locator("#answer").text_content(), canvas_png(page)
    model = page.locator("#model").text_content().removeprefix("model ")
    expect_fresh(page)

    choices(page).nth(0).focus()
    page.keyboard.press("Tab")  # the buttons are in the tab order, one after another
    one = page.get_by_role("group", name=WRONG).get_by_role("button", name="1", exact=True)
    expect(one).to_be_focused()
    assert one.evaluate("b => getComputedStyle(b).outlineStyle") == "solid"  # the keyboard's focus ring shows
    page.keyboard.press("Enter")
    thanks = page.locator("#thanks")
    expect(thanks).to_have_text(THANKS)
    said, ident = THANKS.match(thanks.text_content()).groups()
    assert said == "1"
    assert thanks.get_attribute("role") == "status"  # announced to a screen reader
    expect(thanks).to_be_focused()  # the keyboard user's place is kept, not lost to the page's top
    expect_all_disabled(page)  # one correction per answer
    page.screenshot(path=SHOTS / "corrected.png", full_page=True)

    new = [row for row in stored(feedback_url) if row["id"] not in before]
    assert [(r["id"], r["label"], r["state"], r["answer"], r["model"], r["source"]) for r in new] == [
        (int(ident), "1", "pending", shown, model, "id")]

    page.get_by_role("button", name="Clear").click()
    expect(page.get_by_role("group", name=WRONG)).to_be_hidden()
    draw(page, SEVEN)  # a new answer: the group is offered afresh
    expect(page.locator("#answer")).to_have_text(shown)
    expect_fresh(page)
    assert canvas_png(page) == drawn  # the same upload again, so the same correction is ...
    page.get_by_role("group", name=WRONG).get_by_role("button", name="1", exact=True).click()
    expect(thanks).to_have_text(f"Already noted as 1 (correction #{ident}). Thank you!")  # ... counted once
    expect_all_disabled(page)
    assert [row["id"] for row in stored(feedback_url) if row["id"] not in before] == [int(ident)]


def test_an_uploaded_answer_is_corrected_by_a_click_and_a_new_one_resets_it(page, read_right, feedback_url):
    (first, label), (second, other) = read_right[0], read_right[1]
    page.get_by_text("Upload", exact=True).click()
    page.set_input_files("#file", first)
    expect(page.locator("#answer")).to_have_text(str(label))
    expect_fresh(page)
    choices(page).get_by_text("not a digit").click()
    expect(page.locator("#thanks")).to_have_text(THANKS)
    said, ident = THANKS.match(page.locator("#thanks").text_content()).groups()
    assert said == "not a digit"
    expect_all_disabled(page)
    row, = [row for row in stored(feedback_url) if row["id"] == int(ident)]
    assert (row["label"], row["state"], row["answer"]) == ("not_a_digit", "pending", str(label))

    page.set_input_files("#file", second)  # a new answer, a new chance to correct it
    expect(page.locator("#answer")).to_have_text(str(other))
    expect_fresh(page)
    with page.expect_response(lambda r: "/read" in r.url):  # /read answers have no id: nothing to correct
        page.get_by_text("A number", exact=True).click()
    expect(page.get_by_role("group", name=WRONG)).to_be_hidden()


def test_a_refused_correction_shows_the_apis_error_and_can_be_tried_again(page, server):
    """A sample photo's answer, corrected with the Space key; the id is changed on its way, so the server
    itself refuses it (404 unknown_id) and the page shows that error's message."""
    sent = []

    def changed(body):  # the same request with the id's signature end changed
        return {**body, "id": body["id"][:-4] + ("AAAA" if body["id"][-4:] != "AAAA" else "BBBB")}

    def forge(route):
        sent.append(json.loads(route.request.post_data))
        route.continue_(post_data=json.dumps(changed(sent[-1])))

    page.route("**/feedback", forge)
    page.get_by_text("Upload", exact=True).click()
    page.locator("#sample-list button").first.click()
    expect(page.locator("#preview")).to_be_visible()
    expect_fresh(page)
    three = page.get_by_role("group", name=WRONG).get_by_role("button", name="3", exact=True)
    three.focus()
    page.keyboard.press(" ")
    expect(page.locator("#thanks")).to_have_class("thanks error")
    assert len(sent) == 1 and sent[0]["label"] == "3" and set(sent[0]) == {"id", "label"}
    status, body = fetch(server + "/feedback", json.dumps(changed(sent[0])).encode(), content_type="application/json")
    assert status == 404 and json.loads(body)["error"]["code"] == "unknown_id"
    expect(page.locator("#thanks")).to_have_text(json.loads(body)["error"]["message"])
    for k in range(11):  # not kept: the buttons come back for another try
        expect(choices(page).nth(k)).to_be_enabled()
    expect(three).to_be_focused()
