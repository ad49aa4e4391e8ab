//! The dashboard in a real browser: two real `pinlock serve` hosts on a
//! fresh database, headless Chromium (Debian's `chromium`) driven over
//! WebDriver (`chromedriver`, Debian's `chromium-driver`) with fantoccini.
//!
//! Without Chromium or chromedriver the test says so loudly and returns
//! (`.ci/run` installs both, so CI runs it). The screenshot it takes of the
//! holder and its waiter goes to `target/dashboard/locks.png`.

mod common;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::serve::*;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use uuid::Uuid;

const TOKEN: &str = "dashboard-token-1";
/// What a worker might write: inert as text, live as markup (see the twin).
const PAYLOAD: &str = r#"<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">"#;
/// Longest the page may take to show a change (publish every 1 s, refresh every 1 s).
const SHOWS_WITHIN: Duration = Duration::from_secs(15);

/// `name` on the `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// chromedriver and a Chromium session; the session is closed (and
/// Chromium with it) and the driver killed when this drops.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Client,
    _driver: Guarded,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start(chromium: &Path, chromedriver: &Path) -> Self {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let (driver, stdout) = Guarded::spawn(Command::new(chromedriver).arg(format!("--port={port}")));
        if let Some(stdout) = stdout {
            std::thread::spawn(move || std::io::copy(&mut { stdout }, &mut std::io::sink()));
        }
        let url = format!("http://127.0.0.1:{port}");
        wait_for(Duration::from_secs(20), "chromedriver to answer", || {
            let answer = ureq::get(format!("{url}/status")).call().map_err(|e| e.to_string())?;
            let status: Value = answer.into_body().read_json().map_err(|e| e.to_string())?;
            if status["value"]["ready"] == true { Ok(()) } else { Err(status.to_string()) }
        });
        let profile = tempfile::tempdir().expect("a profile folder");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", "--hide-scrollbars", "--no-first-run",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        });
        let Value::Object(caps) = caps else { unreachable!("a JSON object") };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = rt
            .block_on(ClientBuilder::new(connector).capabilities(caps).connect(&url))
            .unwrap_or_else(|e| panic!("a Chromium session from chromedriver: {e}\n{}", driver.stderr()));
        Self { rt, client, _driver: driver, _profile: profile }
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.client.goto(url)).unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.rt.block_on(self.client.execute(script, args)).unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Polls `script` until it returns something truthy; returns that.
    fn until(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        wait_for(SHOWS_WITHIN, what, || {
            let value = self.js(script, args.clone());
            let truthy =
                !matches!(&value, Value::Null | Value::Bool(false)) && value.as_array().is_none_or(|a| !a.is_empty());
            if truthy { Ok(value) } else { Err(format!("{value}; page text: {}", self.text())) }
        })
    }

    fn text(&self) -> String {
        let text = self.js("return document.body ? document.body.innerText : ''", vec![]);
        text.as_str().unwrap_or("").chars().take(3000).collect()
    }

    fn screenshot(&self, path: &Path) {
        let png = self.rt.block_on(self.client.screenshot()).expect("a screenshot");
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("create the screenshot folder");
        std::fs::write(path, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.rt.block_on(self.client.clone().close());
    }
}

/// A script that lists the rows of the entity `arguments[0]` on the page as
/// `state:job`, in page order, into `rows`, then runs `then`.
fn rows_then(then: &str) -> String {
    format!(
        r#"const rows = [...document.querySelectorAll(`tbody[data-entity="${{arguments[0]}}"] tr`)]
               .map(r => r.dataset.state + ":" + (r.dataset.job || "")); {then}"#
    )
}

/// Starts a job of `scripted` on `host` right away (a synchronous run that
/// is not waited for); returns its id.
fn run_on(host: &Host, steps: Value) -> i64 {
    let answer = Api::new(&host.base, Some(TOKEN))
        .post("/v1/jobs/run", &json!({ "worker": "scripted", "input": { "steps": steps }, "timeout_ms": 100 }));
    assert!(matches!(answer.status, 200 | 202), "run: {}", answer.text);
    answer.body["id"].as_i64().unwrap_or_else(|| panic!("no id: {}", answer.text))
}

/// Proves the dashboard shows locks cluster-wide and live, in a real
/// browser: it asks for a token (same as the API's) and a good one signs in;
/// a job on host A holds an entity and a job on host B waits for it: host
/// A's page shows the holder row and the waiter under it (B's row, #1 in
/// queue) without a reload, and the server-rendered page has them too (for
/// a browser without JavaScript); once the holder is cancelled the waiter is
/// shown holding, then the entity disappears when it ends. A worker's
/// `<script>` payload in a failed job's error and input is shown as text and
/// never runs, on the page and on the job's page, while the same payload put
/// into a page unescaped does run (the twin). Unknown job ids and a search
/// that matches nothing give empty states; the charts are drawn.
#[test]
fn the_dashboard_shows_a_holder_and_its_waiter_live_in_a_real_browser() {
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver")) else {
        eprintln!(
            "\n\n*** SKIPPED the dashboard browser test: `chromium` and `chromedriver` must be on PATH. ***\n\
             *** Install Debian's packages: apt-get install -y chromium chromium-driver        ***\n\n"
        );
        return;
    };
    let dashboard = "\n[dashboard]\nsample_secs = 1\nslow_secs = 3\n";
    let mut fx = Fixture::new(&(config(&format!("tokens = [{TOKEN:?}]"), "", "") + dashboard));
    fx.start(2);
    let (a, b) = (&fx.hosts[0], &fx.hosts[1]);
    let api = Api::new(&a.base, Some(TOKEN));

    // Same auth as the API: no token, no data; the page asks for one.
    let answer = api.with_token(None).get("/");
    assert_eq!(answer.status, 401, "{}", answer.text);
    assert!(answer.text.contains("name=\"token\""), "a sign-in form: {}", answer.text);
    assert_eq!(api.with_token(None).get("/dashboard/locks").status, 401);
    assert_eq!(api.with_token(Some("dashboard-token-2")).get("/").status, 401, "a wrong token");
    assert_eq!(api.get("/").status, 200, "a bearer token works too");

    let browser = Browser::start(&chromium, &chromedriver);
    browser.goto(&format!("{}/", a.base));
    browser.until("the sign-in form", "return document.querySelector('input[name=token]') !== null", vec![]);
    browser.js(
        "document.querySelector('input[name=token]').value = arguments[0]; document.querySelector('form').submit();",
        vec![json!(TOKEN)],
    );
    browser.until("the dashboard", "return document.getElementById('locks-body') !== null", vec![]);
    // Set once: still there at the end means the page never reloaded.
    browser.js("window.__loadedOnce = true;", vec![]);

    // A failed job whose error and input carry a script.
    let failed = api.submit(json!([{ "op": "fail", "message": PAYLOAD }]), json!({ "max_attempts": 1 }));

    // A holder on A, then a waiter on B.
    let entity = Uuid::new_v4();
    let holder = run_on(a, json!([{ "op": "acquire", "entity": entity }, { "op": "sleep", "ms": 30_000 }]));
    let rows = browser.until(
        "the holder row",
        r#"const rows = [...document.querySelectorAll(`tbody[data-entity="${arguments[0]}"] tr[data-state=held]`)];
           return rows.map(r => r.dataset.job);"#,
        vec![json!(entity)],
    );
    assert_eq!(rows, json!([holder.to_string()]));
    // Once granted, it holds 4 s: A may still publish the old holder for up
    // to a second, and the page refreshes once a second, so the lone waiter
    // row must stay long enough to be seen (1.5 s was missed under load).
    let waiter =
        run_on(b, json!([{ "op": "acquire", "entity": entity, "timeout_ms": 30_000 }, { "op": "sleep", "ms": 4_000 }]));
    let rows = browser.until(
        "the waiter under the holder",
        &rows_then("return rows.length === 2 ? rows : null;"),
        vec![json!(entity)],
    );
    assert_eq!(rows, json!([format!("held:{holder}"), format!("waiting:{waiter}")]), "the waiter is under its holder");
    let cells = browser.js(
        r#"return [...document.querySelectorAll(`tbody[data-entity="${arguments[0]}"] tr`)].map(r => r.innerText);"#,
        vec![json!(entity)],
    );
    let cells = cells.to_string();
    assert!(cells.contains(&a.name) && cells.contains(&b.name), "holder on A, waiter on B: {cells}");
    assert!(cells.contains("#1 in queue"), "{cells}");
    // The page without JavaScript: the server renders the same rows.
    let page = api.get("/");
    assert!(
        page.text.contains(&format!("data-state=\"waiting\" data-job=\"{waiter}\"")),
        "server-rendered waiter: {}",
        page.text
    );
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).parent().expect("target/").join("dashboard/locks.png");
    browser.screenshot(&shot);
    eprintln!("dashboard screenshot: {}", shot.display());
    // Held past `slow_secs` (3 s): marked.
    browser.until(
        "the long hold to be marked slow",
        r#"return document.querySelector(`tbody[data-entity="${arguments[0]}"] tr.holder.slow`) !== null;"#,
        vec![json!(entity)],
    );

    // The holder ends: the waiter holds, then it ends too and the entity goes.
    let answer = api.post(&format!("/v1/jobs/{holder}/cancel"), &json!({}));
    assert_eq!(answer.status, 200, "{}", answer.text);
    browser.until(
        "the waiter to hold",
        &rows_then(&format!("return rows.length === 1 && rows[0] === 'held:{waiter}';")),
        vec![json!(entity)],
    );
    browser.until(
        "the entity to disappear",
        r#"return document.querySelector(`tbody[data-entity="${arguments[0]}"]`) === null;"#,
        vec![json!(entity)],
    );
    api.wait_state(waiter, "succeeded", Duration::from_secs(10));

    // The failed job's error is text, and nothing of it ran.
    let shown = browser.until(
        "the failed job in the jobs panel",
        "const row = document.querySelector(`#jobs-failed tr[data-job=\"${arguments[0]}\"]`); return row && row.innerText;",
        vec![json!(failed)],
    );
    assert!(shown.as_str().is_some_and(|t| t.contains(PAYLOAD)), "the payload shows as text: {shown}");
    let escaped = "return [window.__pwned === undefined, document.querySelectorAll('img[onerror]').length];";
    assert_eq!(browser.js(escaped, vec![]), json!([true, 0]), "no payload ran or became markup");
    assert_eq!(browser.js("return window.__loadedOnce === true", vec![]), json!(true), "updated without a reload");

    // The charts: drawn, with this host's samples.
    browser.until("the charts", "return document.querySelectorAll('#charts canvas').length >= 5", vec![]);
    let history = api.get("/dashboard/history");
    let samples = history.body["samples"].as_array().cloned().unwrap_or_default();
    assert!(!samples.is_empty(), "{}", history.text);
    let sum = |key: &str| samples.iter().filter_map(|s| s["jobs"][key].as_u64()).sum::<u64>();
    assert!(sum("error") + sum("released") + sum("succeeded") >= 1, "jobs by result: {}", history.text);

    // The job's page: its input and error, escaped; the waiter's lock times.
    browser.goto(&format!("{}/jobs/{failed}", a.base));
    let page =
        browser.until("the job page", "return document.getElementById('job-body') && document.body.innerText;", vec![]);
    assert!(page.as_str().is_some_and(|t| t.contains("Error") && t.matches(PAYLOAD).count() >= 1), "{page}");
    assert_eq!(browser.js(escaped, vec![]), json!([true, 0]), "nothing ran on the job's page");
    let waiter_page = Api::new(&b.base, Some(TOKEN)).get(&format!("/jobs/{waiter}"));
    assert!(waiter_page.text.contains("Wait (acquire to grant)"), "B recorded its times: {}", waiter_page.text);
    assert!(waiter_page.text.contains(&b.name), "the host that ran it: {}", waiter_page.text);

    // Empty states, not error pages.
    for (path, says) in [("/jobs/987654321", "No job"), ("/jobs/abc", "is not a job id")] {
        browser.goto(&format!("{}{path}", a.base));
        let text = browser.until(
            "an empty state",
            "return document.querySelector('.empty') && document.body.innerText;",
            vec![],
        );
        assert!(text.as_str().is_some_and(|t| t.contains(says)), "{path}: {text}");
    }
    browser.goto(&format!("{}/?q=nothing-is-called-this", a.base));
    let text = browser.until(
        "an empty search",
        "return document.querySelector('#locks-body .empty') && document.body.innerText;",
        vec![],
    );
    assert!(text.as_str().is_some_and(|t| t.contains("matches this search")), "{text}");

    // The twin: the same payload put into a page unescaped does run, so the
    // checks above would have seen it.
    browser.goto("about:blank");
    browser.js(
        "document.body.innerHTML = '<div id=t></div>'; document.getElementById('t').innerHTML = arguments[0];",
        vec![json!(PAYLOAD)],
    );
    let ran = browser.until("the unescaped payload to run", "return window.__pwned === 2;", vec![]);
    assert_eq!(ran, json!(true));
}
