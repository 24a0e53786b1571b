"""HTML extraction (selectolax): reading order, boilerplate skipped, malformed and hostile pages."""
from curate.interleaved._html import extract


def test_paragraphs_and_images_in_reading_order():
    html = """<html><head><title> My  page </title><script>var p = "<p>no</p>";</script></head><body>
    <nav>Home | About</nav><h1>Shapes</h1><p>First <b>para</b>graph.</p>
    <figure><img src="a.jpg" alt="an a"><figcaption>Caption a.</figcaption></figure>
    <div>Loose text<img src="/b.png"></div><footer>Copyright</footer></body></html>"""
    title, segs = extract(html, "http://x.org/dir/page.html")
    assert title == "My page"
    assert segs == [
        {"type": "text", "text": "Shapes"},
        {"type": "text", "text": "First paragraph."},
        {"type": "image", "src": "http://x.org/dir/a.jpg", "alt": "an a"},
        {"type": "text", "text": "Caption a."},
        {"type": "text", "text": "Loose text"},
        {"type": "image", "src": "http://x.org/b.png", "alt": None},
    ]


def test_base_href_and_data_urls():
    html = '<head><base href="http://cdn.org/img/"></head><body><img src="c.jpg"><img src="data:image/png;base64,AAAA"></body>'
    _, segs = extract(html, "http://x.org/p.html")
    assert [s["src"] for s in segs] == ["http://cdn.org/img/c.jpg", "data:image/png;base64,AAAA"]


def test_malformed_html_and_deep_nesting_do_not_raise():
    html = "<div>" * 20000 + "<p>deep text<img src=x.jpg>" + "</span></td>" + "<p>unclosed <b><i>tail"
    _, segs = extract(html.encode("latin-1"), "http://x.org/")
    assert {"type": "text", "text": "deep text"} in segs
    assert any(s["type"] == "image" and s["src"] == "http://x.org/x.jpg" for s in segs)
    assert segs[-1] == {"type": "text", "text": "unclosed tail"}


def test_thousands_of_images_and_empty_pages():
    _, segs = extract("<body>" + "<img src='i.jpg'>" * 5000 + "</body>", "http://x.org/")
    assert len(segs) == 5000
    assert extract("", None) == (None, [])
    assert extract(b"\xff\xfe garbage \x00 bytes", None)[1] == [{"type": "text", "text": "\ufffd\ufffd garbage bytes"}]
