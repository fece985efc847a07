//! The headless-Chromium harness of the report tests (`netmorph::testing::browser`): a good
//! self-contained page passes every check, and each fault of a bad one is caught: a request to the
//! network by an image, a stylesheet, a script, a CSS `@import` and `url(...)`, a `console.error`,
//! an uncaught exception, a Content-Security-Policy violation, a blank page, a missing section.
//! Needs Debian's `chromium` package, as CI installs it; without it these fail, naming the package.

use netmorph::testing::browser::{self, check_self_contained, render, screenshot_is_blank};
use std::path::{Path, PathBuf};

const W: u32 = 640;
const H: u32 = 400;

fn write_page(dir: &Path, name: &str, html: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, html).expect("write the page");
    path
}

/// A 16x16 PNG gradient as a `data:` URL, as the report inlines its images.
fn data_png() -> String {
    let img = image::RgbImage::from_fn(16, 16, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, 128]));
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).expect("encode the PNG");
    format!("data:image/png;base64,{}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png))
}

#[test]
fn a_self_contained_page_passes_every_check() {
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(
        dir.path(),
        "good report.html",
        &format!(
            r##"<!doctype html><html><head><meta charset="utf-8"><title>report</title>
<style>body {{ font-family: sans-serif; margin: 20px; }} h2 {{ color: #225; }}</style></head>
<body><h1>Report</h1>
<h2 id="x">Loss</h2>
<svg id="plot" width="300" height="120" xmlns="http://www.w3.org/2000/svg">
  <rect width="300" height="120" fill="#eef"/><polyline points="0,110 100,60 200,40 300,10" stroke="#c00" stroke-width="3" fill="none"/>
</svg>
<p><img id="sample" width="64" height="64" src="{}" alt="a sample"></p>
</body></html>"##,
            data_png()
        ),
    );
    let r = check_self_contained(&page, W, H, &["x", "plot", "sample"]).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.console_errors.is_empty() && r.requests.is_empty(), "{r:?}");
    assert!(r.dom.contains(r#"<h2 id="x">Loss</h2>"#), "the DOM: {}", r.dom);
    assert!(r.dom.starts_with("<!DOCTYPE html>"), "the DOM: {}", r.dom);
    assert_eq!(r.ids, ["x", "plot", "sample"]);
    assert_eq!(r.missing_ids(&["x", "y"]), ["y"]);
    assert!(!screenshot_is_blank(&r.screenshot).unwrap());
    let shot = image::open(&r.screenshot).unwrap();
    assert_eq!((shot.width(), shot.height()), (W, H), "the screenshot is the viewport");
    // The SVG's red line is drawn: the screenshot is the page, not a placeholder.
    assert!(shot.to_rgb8().pixels().any(|p| p.0[0] > 180 && p.0[1] < 60 && p.0[2] < 60), "no red in the screenshot");
}

#[test]
fn every_fault_of_a_bad_page_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(
        dir.path(),
        "bad.html",
        r#"<!doctype html><html><head><meta charset="utf-8">
<link rel="stylesheet" href="https://cdn.example.com/style.css">
<style>@import url("https://fonts.example.com/font.css"); body { background: url(http://bg.example.com/bg.png); }</style>
<script src="https://js.example.com/lib.js"></script>
</head><body><h2 id="x">Hi</h2>
<img src="http://example.com/x.png">
<script>console.log("not an error"); console.warn("nor this"); console.error("boom", 42);</script>
<script>throw new Error("kaboom");</script>
<script>setTimeout(() => { throw new TypeError("late"); }, 50);</script>
</body></html>"#,
    );
    let r = render(&page, W, H).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("console errors: {:#?}\nrequests: {:#?}", r.console_errors, r.requests);
    for url in [
        "https://cdn.example.com/style.css",
        "https://fonts.example.com/font.css",
        "http://bg.example.com/bg.png",
        "https://js.example.com/lib.js",
        "http://example.com/x.png",
    ] {
        assert!(r.requests.iter().any(|u| u == url), "{url} is not among the requests {:#?}", r.requests);
    }
    assert!(!r.requests.iter().any(|u| u.starts_with("file:")), "the page itself is no request: {:#?}", r.requests);
    let errors = r.console_errors.join("\n");
    assert!(errors.contains("console: boom 42 (file://"), "{errors}");
    assert!(errors.contains("Uncaught Error: kaboom"), "{errors}");
    assert!(errors.contains("TypeError: late"), "a late exception is caught too: {errors}");
    assert!(!errors.contains("not an error") && !errors.contains("nor this"), "only errors count: {errors}");

    let e = check_self_contained(&page, W, H, &["x", "summary"]).unwrap_err();
    for part in ["console errors:", "boom", "requests", "http://example.com/x.png", "no element with id summary"] {
        assert!(e.contains(part), "{part:?} is not in the error: {e}");
    }
}

#[test]
fn a_content_security_policy_violation_and_another_local_file_are_caught() {
    let dir = tempfile::tempdir().unwrap();
    write_page(dir.path(), "beside.css", "h2 { color: red; }");
    let page = write_page(
        dir.path(),
        "csp.html",
        r#"<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline' file:">
<link rel="stylesheet" href="beside.css">
</head><body><h2 id="x">Hi</h2><img src="https://blocked.example.com/x.png"><script>console.error("never runs")</script></body></html>"#,
    );
    let r = render(&page, W, H).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("console errors: {:#?}\nrequests: {:#?}", r.console_errors, r.requests);
    let errors = r.console_errors.join("\n");
    assert!(errors.contains("Content Security Policy") && errors.contains("https://blocked.example.com/x.png"), "{errors}");
    assert!(errors.contains("inline script"), "{errors}");
    assert!(!errors.contains("never runs"), "{errors}");
    // A self-contained report loads nothing from beside it either.
    assert!(r.requests.iter().any(|u| u.starts_with("file://") && u.ends_with("/beside.css")), "{:#?}", r.requests);
}

#[test]
fn a_blank_page_is_blank_and_a_missing_browser_names_the_package() {
    let dir = tempfile::tempdir().unwrap();
    let page = write_page(dir.path(), "blank.html", "<!doctype html><html><body></body></html>");
    let r = render(&page, W, H).unwrap_or_else(|e| panic!("{e}"));
    assert!(r.console_errors.is_empty() && r.requests.is_empty(), "{r:?}");
    assert!(screenshot_is_blank(&r.screenshot).unwrap(), "{}", r.screenshot.display());
    let e = check_self_contained(&page, W, H, &[]).unwrap_err();
    assert!(e.contains("is blank"), "{e}");

    let e = browser::render_with(Path::new("/nonexistent/chromium"), &page, W, H).unwrap_err();
    assert!(e.contains("apt-get install chromium"), "{e}");
}
