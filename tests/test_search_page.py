"""The search page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright for
Python) on `langclip serve`'s app over the demo world's test pictures. A Russian query's top results must
show the described colour and shape (checked against the world's ground truth); "similar", an uploaded
picture and a dropped one search too; the page works by keyboard and at phone width. Screenshots go to
the test's folder (and to $LANGCLIP_SCREENSHOTS, which is how docs/search.png was made).

The browser is required: without it this test fails (install Debian's chromium, as .ci/run does);
LANGCLIP_NO_BROWSER=1 skips it, visibly, on a machine that cannot have one."""
import csv
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("LANGCLIP_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def server(demo_small):
    import uvicorn

    from langclip.search import Index, QueryModel
    from langclip.search.server import create_app

    # both of the demo's students over its one index: the clip one answers by default
    app = create_app(Index(demo_small / "index"), [QueryModel(demo_small / "runs" / "clip"),
                                                   QueryModel(demo_small / "runs" / "scratch", image=False)], token="t0k")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(_proxied(app, "/photos"), host="127.0.0.1", port=port, log_level="warning"))
    th = threading.Thread(target=srv.run, daemon=True)
    th.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", demo_small
    srv.should_exit = True
    th.join(10)


def _proxied(app, prefix: str):
    """The app at the server's root, and under `prefix` as a reverse proxy serves it there that strips the path
    (nginx's `location /photos/ { proxy_pass http://127.0.0.1:8000/; }`): the app is not told (no --root-path)."""
    async def proxy(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(prefix + "/"):
            scope = {**scope, "path": scope["path"][len(prefix):], "raw_path": scope["raw_path"][len(prefix):]}
        await app(scope, receive, send)
    return proxy


@pytest.fixture(scope="module")
def browser():
    if os.environ.get("LANGCLIP_NO_BROWSER") == "1":
        pytest.skip("LANGCLIP_NO_BROWSER=1: the real-browser test of the search page was not run")
    assert Path(CHROMIUM).is_file(), (f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium), "
                                      f"as .ci/run does, or set LANGCLIP_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


def _truth(demo: Path) -> dict:
    return {r["image"].split("/")[-1]: r for r in csv.DictReader(open(demo / "world" / "test.csv", encoding="utf-8"))}


def _names(page) -> list[str]:
    return page.locator("[data-testid=result] .meta span:first-child").all_inner_texts()


def _api(page, **params) -> dict:
    """/api/search's answer to `params`, fetched from inside the page (its origin, the test's token)."""
    from urllib.parse import urlencode

    return page.evaluate("async q => (await (await fetch('/api/search?' + q, {headers: {Authorization: "
                         "'Bearer t0k'}})).json())", urlencode(params))


def _search_as_api(page, fields: dict, in_url: str, shown: str, **params) -> list[str]:
    """Fill the page's fields, send with Enter (the request's URL holding `in_url`), wait for the message to
    show `shown`: the results are the API's for `params`; -> their names."""
    for sel, value in fields.items():
        page.fill(sel, value)
    with page.expect_request(lambda r: "/api/search" in r.url and in_url in r.url):
        page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelector('[data-testid=message]').textContent.includes({shown!r})")
    page.wait_for_selector("[data-testid=result]")
    assert _names(page) == [r["name"] for r in _api(page, **params)["results"]]
    return _names(page)


def _shots(tmp_path: Path, page, name: str) -> None:
    page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=False)
    if os.environ.get("LANGCLIP_SCREENSHOTS"):
        Path(os.environ["LANGCLIP_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / f"{name}.png", Path(os.environ["LANGCLIP_SCREENSHOTS"]) / f"{name}.png")


def test_search_page_in_chromium(server, browser, tmp_path):
    url, demo = server
    truth = _truth(demo)
    page = browser.new_page(viewport={"width": 1100, "height": 800}, locale="ru-RU")   # the page follows the browser
    page.goto(f"{url}/#token=t0k")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('индекс')")
    status = page.inner_text("[data-testid=status]")     # the model and the index that answer
    assert "clip" in status and "400 фото" in status, status
    assert page.get_attribute("#q", "placeholder") == "например: две красные звезды"
    # a Russian query, typed and sent with Enter
    page.fill("#q", "жёлтый квадрат")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=result]")
    top = _names(page)[:4]
    facts = [(truth[n]["colour"], truth[n]["shape"]) for n in top]
    assert all(c == "yellow" for c, _ in facts), facts            # every one shows the colour
    assert sum(s == "square" for _, s in facts) >= 3, facts        # and (3 of 4 at least) the shape
    _shots(tmp_path, page, "search")
    assert not page.is_visible("[data-testid=unseen]")   # both words occur in the student's captions
    # keyboard: Tab to the first result, Enter opens it, "similar" searches by it
    page.focus("[data-testid=result] >> nth=0")
    page.keyboard.press("Enter")
    page.wait_for_selector("dialog[open]")
    first = top[0]
    page.click("#similar")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('Похожие')")
    sim = _names(page)[:4]
    assert first not in sim and sum(truth[n]["colour"] == truth[first]["colour"] for n in sim) >= 3, sim
    # search by an uploaded picture: it finds itself first
    pic = demo / "world" / "test" / "00007.png"
    page.set_input_files("[data-testid=file]", str(pic))
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('00007.png')")
    assert _names(page)[0] == "00007.png"
    # ... and by a picture dropped on the page
    page.evaluate("""async () => {
        const blob = await (await fetch('/image/11?token=t0k')).blob();
        const dt = new DataTransfer(); dt.items.add(new File([blob], 'dropped.png', {type: blob.type}));
        document.dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
    }""")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('dropped.png')")
    assert _names(page)[0] == "00011.png"
    # Ukrainian, English, German, Greek, Spanish interface strings in turn; the example query stays in the
    # model's language; the button names the next language
    for button, status, eg, nxt in (("Знайти", "індекс", "наприклад: ", None), ("Search", "pictures", "e.g. ", "DE"),
                                    ("Suchen", "Bilder", "z. B. ", "EL"), ("Αναζήτηση", "εικόνες", "π.χ. ", "ES"),
                                    ("Buscar", "imágenes", "p. ej.: ", "RU")):
        page.click("#lang")
        assert page.inner_text("button[type=submit]") == button and status in page.inner_text("[data-testid=status]")
        assert page.get_attribute("#q", "placeholder") == eg + "две красные звезды"
        assert nxt is None or page.inner_text("#lang") == nxt
    page.fill("#q", "ꙮꙮ квадрат")   # a word no caption of the run held: the page says its answer is a guess
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=unseen]", state="visible")
    assert page.inner_text("[data-testid=unseen]") == ("no aparecen en los textos de entrenamiento del modelo, la "
                                                       "respuesta es una conjetura: ꙮꙮ")   # Spanish, the last one chosen
    # the demo's «красные» never occurred in its captions ('крас' + 'ные'): searched as a trained form of it
    page.click("#lang")   # back to Russian
    page.fill("#q", "две красные звезды")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('[data-testid=unseen]').textContent.includes('→')")
    api = _api(page, k=4, q="две красные звезды")
    form = api["rewritten"]["красные"]
    assert page.inner_text("[data-testid=unseen]") == f"искали с формами, которые были в обучающих подписях: красные → {form}"
    typed = _api(page, k=4, as_typed="true", q="две красные звезды")
    red_stars = [sum((truth[n]["colour"], truth[n]["shape"]) == ("red", "star") for n in names)
                 for names in (_names(page)[:4], [r["name"] for r in typed["results"]])]
    assert red_stars[0] >= 2 and red_stars[0] > red_stars[1], red_stars   # the rewritten query finds more of them
    assert all(truth[n]["colour"] == "red" for n in _names(page)[:4])
    page.close()
    # several text towers over one index (the demo's two students): the page offers them, and a query goes to the
    # one chosen (the API's model=), answered as the API answers it
    page = browser.new_page(locale="ru-RU")
    page.goto(f"{url}/#token=t0k")
    page.wait_for_selector("[data-testid=model]", state="visible")
    health = page.evaluate("async () => (await (await fetch('/api/health')).json())")
    assert [m["key"] for m in health["models"]] == ["clip", "scratch"]
    assert page.get_attribute("[data-testid=model]", "aria-label") == "Модель"   # in the page's language
    assert page.locator("[data-testid=model] option").all_inner_texts() == [
        f"{m['lang'].upper()} · {m['name']}" for m in health["models"]]
    page.select_option("[data-testid=model]", "scratch")
    _search_as_api(page, {"#q": "жёлтый квадрат"}, "model=scratch", "жёлтый квадрат", k=24, model="scratch",
                   q="жёлтый квадрат")
    page.close()
    # a browser in a language the page does not speak (French): the model's language (a Ukrainian, German
    # Greek or Spanish one here, its health answer rewritten), not a fixed one; a model in a language it does not speak: English
    for model_lang, button in (("uk", "Знайти"), ("de", "Suchen"), ("el", "Αναζήτηση"), ("es", "Buscar"), ("fr", "Search")):
        page = browser.new_page(locale="fr-FR")
        page.route("**/api/health*", (lambda lg: lambda route: route.fulfill(json={**route.fetch().json(), "lang": lg}))(model_lang))
        page.goto(f"{url}/#token=t0k")
        page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('clip')")
        assert page.inner_text("button[type=submit]") == button, model_lang
        page.close()


def test_search_page_at_phone_width(server, browser, tmp_path):
    url, _ = server
    page = browser.new_page(viewport={"width": 375, "height": 740}, device_scale_factor=2, locale="ru-RU")
    page.goto(f"{url}/#token=t0k")
    page.fill("#q", "красные звёзды")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=result]")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")   # no sideways scrolling
    boxes = [page.locator("[data-testid=result]").nth(i).bounding_box() for i in range(2)]
    assert boxes[0]["y"] == boxes[1]["y"] and boxes[0]["width"] < 200                     # two columns
    _shots(tmp_path, page, "search_phone")
    # without the token, the API refuses and the page says so
    bare = browser.new_page()
    bare.goto(url + "/")
    bare.fill("#q", "кот")
    bare.keyboard.press("Enter")
    bare.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('token')")
    bare.close()
    page.close()


def test_a_search_is_a_link_and_shows_more(server, browser):
    """A search is kept in the address (#q=…&model=… or #similar=ID, beside the token): opening the link,
    reloading and going back repeat it. "Show more" adds results up to the server's cap (100), the first
    ones unchanged, and hands the focus to the first new one."""
    from urllib.parse import quote

    url, _ = server
    page = browser.new_page(locale="ru-RU")
    with page.expect_request(lambda r: "/api/search" in r.url and "model=scratch" in r.url):
        page.goto(f"{url}/#token=t0k&model=scratch&q={quote('жёлтый квадрат')}")
    page.wait_for_selector("[data-testid=result]")
    assert page.input_value("#q") == "жёлтый квадрат" and page.input_value("[data-testid=model]") == "scratch"
    first = _names(page)
    assert len(first) == 24 and page.is_visible("[data-testid=more]")
    assert page.inner_text("[data-testid=more]") == "Показать ещё"
    for n in (48, 72, 96, 100):
        page.click("[data-testid=more]")
        page.wait_for_function(f"document.querySelectorAll('[data-testid=result]').length === {n}")
        assert _names(page)[:24] == first
    assert page.evaluate("document.activeElement.dataset.id") == page.get_attribute(
        "[data-testid=result] >> nth=96", "data-id")                 # the first of the last ones added
    assert not page.is_visible("[data-testid=more]")              # 100: the server's cap
    # a new search is a new link; back repeats the one before
    page.fill("#q", "красный круг")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('красный круг')")
    assert "q=" + quote("красный круг").replace("%20", "+") in page.url and "token=t0k" in page.url
    red = _names(page)
    page.go_back()
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('жёлтый квадрат')")
    assert _names(page) == first and page.input_value("#q") == "жёлтый квадрат"
    # "similar" is a link too: reloaded, it answers the same
    page.go_forward()
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('красный круг')")
    assert _names(page) == red
    page.click("[data-testid=result] >> nth=0")
    page.click("#similar")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('Похожие')")
    assert "similar=" in page.url and "q=" not in page.url
    sim = _names(page)
    page.reload()
    page.wait_for_selector("[data-testid=result]")
    assert _names(page) == sim
    page.goto(f"{url}/#token=t0k")          # the page as first opened: no search, nothing shown
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('индекс')")
    page.fill("#q", "кот")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=result]")
    page.go_back()
    page.wait_for_function("document.querySelectorAll('[data-testid=result]').length === 0")
    assert page.input_value("#q") == "" and not page.is_visible("[data-testid=more]")
    # "without": words to look away from (the API's subtract=), kept in the link too
    assert page.get_attribute("[data-testid=not]", "placeholder") == "без: …"
    without = _search_as_api(page, {"#q": "звёзды", "[data-testid=not]": "красные"}, "subtract=", "−", k=24,
                             q="звёзды", subtract="красные")
    assert "not=" in page.url
    page.reload()
    page.wait_for_selector("[data-testid=result]")
    assert page.input_value("[data-testid=not]") == "красные" and _names(page) == without
    page.close()


def test_pictures_join_the_query(server, browser, tmp_path):
    """From the viewer, "+ к запросу" and "− из запроса" put a picture of the index into the query beside the
    words (the API's add_id= / subtract_id=): the page shows the API's answer to the same terms, each picture
    as a chip whose × takes it out; the link keeps them; a picture alone is something to look for."""
    url, _ = server
    page = browser.new_page(viewport={"width": 1100, "height": 800}, locale="ru-RU")
    page.goto(f"{url}/#token=t0k")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('индекс')")
    page.fill("#q", "звёзды")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=result]")

    def take(nth: int, button: str, in_url: str) -> int:
        page.click(f"[data-testid=result] >> nth={nth}")
        id_ = int(page.get_attribute(f"[data-testid=result] >> nth={nth}", "data-id"))
        with page.expect_response(lambda r: "/api/search" in r.url and in_url in r.url):
            page.click(f"[data-testid={button}]")
        page.wait_for_function(f"document.querySelectorAll('[data-testid=terms] li[data-id=\"{id_}\"]').length === 1")
        return id_

    def shown(**params) -> list[str]:   # the page comes to show the API's answer to these terms
        want = [r["name"] for r in _api(page, k=24, **params)["results"]]
        page.wait_for_function("want => JSON.stringify([...document.querySelectorAll('[data-testid=result] .meta "
                               "span:first-child')].map(e => e.textContent)) === JSON.stringify(want)", arg=want)
        return want

    assert page.inner_text("[data-testid=addpic]") == "+ к запросу" and not page.is_visible("[data-testid=terms]")
    a = take(2, "addpic", "add_id=")
    shown(q="звёзды", add_id=a)
    b = take(5, "subpic", "subtract_id=")
    both = shown(q="звёзды", add_id=a, subtract_id=b)
    assert f"pic={a}" in page.url and f"notpic={b}" in page.url
    assert page.inner_text("[data-testid=message]").startswith("«звёзды» + ")
    _shots(tmp_path, page, "search_pictures")
    page.reload()                                          # the link restores the pictures
    page.wait_for_selector("[data-testid=terms] li >> nth=1")
    assert shown(q="звёзды", add_id=a, subtract_id=b) == both
    page.click(f"[data-testid=terms] li[data-id='{b}'] button")   # × takes one out
    shown(q="звёзды", add_id=a)
    assert page.locator("[data-testid=terms] li").count() == 1 and "notpic" not in page.url
    page.fill("#q", "")                                    # a picture alone
    page.keyboard.press("Enter")
    page.wait_for_function("!document.querySelector('[data-testid=message]').textContent.includes('звёзды')")
    alone = shown(add_id=a)
    assert alone[0] == _api(page, add_id=a, k=1)["results"][0]["name"]
    page.close()


def test_the_page_behind_a_reverse_proxy_under_a_path(server, browser):
    """Served to others, the page often sits behind a reverse proxy under a path (https://host/photos/), with
    HTTPS in front. Before, it asked /api/health, the thumbnails and the pictures at the host's root, outside
    that path: the status line showed an error and no search ran. Every request now stays under the page's own
    address: a search, its thumbnails, the viewer's picture, "similar" and a search by picture all work."""
    url, demo = server
    page = browser.new_page(viewport={"width": 1100, "height": 800}, locale="ru-RU")
    asked = []
    page.on("request", lambda r: asked.append(r.url))
    page.goto(f"{url}/photos/#token=t0k")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('индекс')")
    page.fill("#q", "жёлтый квадрат")
    page.keyboard.press("Enter")
    page.wait_for_selector("[data-testid=result]")
    page.wait_for_function("[...document.querySelectorAll('[data-testid=result] img')].slice(0, 4)"
                           ".every(i => i.complete && i.naturalWidth > 0)")          # the thumbnails are shown
    page.click("[data-testid=result] >> nth=0")
    page.wait_for_function("document.querySelector('#full').complete && document.querySelector('#full').naturalWidth > 0")
    # the viewer asks for the picture at the screen's size (device pixels); "original" links the file itself
    id_ = page.get_attribute("[data-testid=result] >> nth=0", "data-id")
    side = page.evaluate("Math.ceil(Math.max(screen.width, screen.height) * devicePixelRatio)")
    assert page.get_attribute("#full", "src") == f"/photos/image/{id_}?size={side}&token=t0k"
    assert page.get_attribute("[data-testid=original]", "href") == f"/photos/image/{id_}?token=t0k"
    page.click("#similar")
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('Похожие')")
    page.set_input_files("[data-testid=file]", str(demo / "world" / "test" / "00007.png"))
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('00007.png')")
    assert _names(page)[0] == "00007.png"
    outside = [u for u in asked if not u.startswith(f"{url}/photos/")]
    assert len(asked) > 10 and not outside, outside
    page.close()


def test_a_big_photo_is_sent_small_enough(server, browser, tmp_path):
    """A phone's photo is often over the server's upload cap (10 MiB; 48-megapixel sensors write 15-25 MB), and
    was refused (413). The page now sends a big picture at 768 pixels on its shorter side, as a JPEG: a 27 MB
    picture of one of the index's finds that picture first."""
    from PIL import Image

    url, demo = server
    big = tmp_path / "big.png"
    Image.open(demo / "world" / "test" / "00011.png").convert("RGB").resize((3000, 3000), Image.NEAREST).save(
        big, compress_level=0)
    assert big.stat().st_size > 10 << 20
    page = browser.new_page(locale="ru-RU")
    page.goto(f"{url}/#token=t0k")
    page.wait_for_function("document.querySelector('[data-testid=status]').textContent.includes('индекс')")
    with page.expect_response(lambda r: "/api/search/image" in r.url) as answer:
        page.set_input_files("[data-testid=file]", str(big))
    page.wait_for_function("document.querySelector('[data-testid=message]').textContent.includes('big.png')")
    page.wait_for_selector("[data-testid=result]")
    assert answer.value.status == 200 and int(answer.value.request.header_value("content-length")) < 1 << 20
    assert _names(page)[0] == "00011.png"
    page.close()
