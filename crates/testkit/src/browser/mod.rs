//! Debian's Chromium, headless, driven through chromedriver with fantoccini: the harness of
//! the console and portal browser tests.
//!
//! A test starts a [`Browser`], runs its scenario as named [`Browser::step`]s and ends with
//! [`Browser::close`]. A step that fails (an `Err` or a panic) leaves a screenshot in
//! `target/browser-screens/<test>-<step>.png` before the failure goes on. A test that
//! panics outside a step, or never calls `close`, still leaves no browser behind: dropping
//! the [`Browser`] kills chromedriver's process group (chromedriver and every Chromium
//! process) and removes the profile directory.
//!
//! ```no_run
//! # async fn scenario(url: &str) -> Result<(), portico_testkit::browser::Error> {
//! use portico_testkit::Browser;
//!
//! let b = Browser::start().await;
//! b.step("sign in", async {
//!     b.goto(&format!("{url}/console/login")).await?;
//!     b.fill("input[name=user]", "admin").await?;
//!     b.click("button[type=submit]").await?;
//!     b.wait_for_text("h1", "APIs").await?;
//!     assert!(!b.js_marker("__xss").await?, "a script ran");
//!     Ok(())
//! })
//! .await?;
//! b.close().await;
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::{CmdError, ErrorStatus};
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt as _;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::process::Process;

mod error;

pub use error::Error;
use error::wd;

/// The browser binary (Debian's `chromium` package; a shell wrapper around
/// `/usr/lib/chromium/chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// The WebDriver server (Debian's `chromium-driver` package).
pub const CHROMEDRIVER: &str = "chromedriver";
/// How long [`Browser::wait_for`] and the helpers built on it poll by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// Chromium's flags besides `--user-data-dir`: headless, as root in a container (no
/// sandbox, no `/dev/shm`), and quiet (no first-run UI, no background traffic).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];
const POLL: Duration = Duration::from_millis(50);
const SIGKILL: i32 = 9;

/// A headless Chromium session with the chromedriver serving it; see the module docs.
pub struct Browser {
    client: Client,
    test: String,
    wait: Duration,
    guard: Guard,
}

/// Owns the processes and the profile; kills and removes them if [`Browser::close`] did not.
struct Guard {
    driver: Process,
    profile: Option<TempDir>,
}

impl Browser {
    /// Starts chromedriver on a port the kernel picks and opens a Chromium session with a
    /// fresh profile; screenshots are named after the current test (its thread's name).
    /// Panics, with chromedriver's output, when either cannot start.
    pub async fn start() -> Self {
        let test = std::thread::current()
            .name()
            .filter(|n| *n != "main")
            .unwrap_or("browser")
            .to_owned();
        Self::start_named(&test).await
    }

    /// [`Browser::start`] with the name screenshots take instead of the test's.
    pub async fn start_named(test: &str) -> Self {
        let profile = tempfile::Builder::new()
            .prefix("portico-chromium-")
            .tempdir()
            .expect("a temporary profile directory");
        // Port 0: chromedriver binds a free port and prints it, so no other process can take
        // it between our choice and its bind.
        let driver = Process::spawn_group(Path::new(CHROMEDRIVER), &["--port=0"], &[]);
        let guard = Guard {
            driver,
            profile: Some(profile),
        };
        let line = guard
            .driver
            .wait_for("started successfully on port", WAIT)
            .await;
        let port: u16 = line
            .trim_end_matches('.')
            .rsplit(' ')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in chromedriver's `{line}`"));
        let dir = guard.profile.as_ref().map(TempDir::path).expect("profile");
        let mut args: Vec<String> = FLAGS.iter().map(|f| (*f).to_owned()).collect();
        args.push(format!("--user-data-dir={}", dir.display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!("an object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot open a Chromium session ({CHROMIUM}; are Debian's chromium and \
                     chromium-driver installed? scripts/test.sh installs them): {e}\n\
                     chromedriver said:\n{}",
                    guard.driver.output()
                )
            });
        Self {
            client,
            test: sanitize(test),
            wait: WAIT,
            guard,
        }
    }

    /// Ends the session (Chromium quits), stops chromedriver and removes the profile.
    pub async fn close(self) {
        let Self {
            client, mut guard, ..
        } = self;
        if let Err(e) = client.close().await {
            eprintln!("closing the Chromium session: {e}");
        }
        guard.driver.signal_group(SIGKILL);
        guard.driver.wait(WAIT).await;
        if let Some(profile) = guard.profile.take() {
            let path = profile.path().to_owned();
            if let Err(e) = profile.close() {
                eprintln!("removing {}: {e}", path.display());
            }
        }
    }

    /// Sets how long the waiting helpers poll (default [`WAIT`]).
    pub fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// The fantoccini client, for anything the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// chromedriver's process id; its process group holds every Chromium process too.
    pub fn driver_pid(&self) -> u32 {
        self.guard.driver.pid()
    }

    /// Runs `body` as the step `name`: when it returns an error or panics, saves a
    /// screenshot as `<test>-<name>.png` first, then returns [`Error::Step`] or goes on
    /// panicking.
    pub async fn step<T, F>(&self, name: &str, body: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        match AssertUnwindSafe(body).catch_unwind().await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                let screenshot = self.screenshot(name).await.map_err(|e| e.to_string());
                Err(Error::Step {
                    step: name.to_owned(),
                    screenshot,
                    source: Box::new(e),
                })
            }
            Err(panic) => {
                match self.screenshot(name).await {
                    Ok(p) => eprintln!("step `{name}` panicked; screenshot: {}", p.display()),
                    Err(e) => eprintln!("step `{name}` panicked; no screenshot: {e}"),
                }
                std::panic::resume_unwind(panic)
            }
        }
    }

    /// Saves a PNG of the window as `target/browser-screens/<test>-<name>.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, Error> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|e| wd(format!("screenshot `{name}`"), e))?;
        let path = self.screenshot_path(name);
        let written =
            std::fs::create_dir_all(screens_dir()).and_then(|()| std::fs::write(&path, png));
        written.map_err(|source| Error::Io {
            what: format!("write {}", path.display()),
            source,
        })?;
        Ok(path)
    }

    /// Where [`Browser::screenshot`] puts the screenshot `name`.
    pub fn screenshot_path(&self, name: &str) -> PathBuf {
        screens_dir().join(format!("{}-{}.png", self.test, sanitize(name)))
    }

    /// Loads `url` and waits for its `load` event.
    pub async fn goto(&self, url: &str) -> Result<(), Error> {
        self.client
            .goto(url)
            .await
            .map_err(|e| wd(format!("goto {url}"), e))
    }

    /// The address of the page shown.
    pub async fn current_url(&self) -> Result<String, Error> {
        self.client
            .current_url()
            .await
            .map(String::from)
            .map_err(|e| wd("current url", e))
    }

    /// The address of the page shown, polling until it contains `needle`: a click that
    /// navigates has taken effect (the old page's elements are gone).
    pub async fn wait_for_url(&self, needle: &str) -> Result<String, Error> {
        self.poll(format!("an address with `{needle}`"), || async move {
            let url = self.client.current_url().await.map_err(|e| e.to_string())?;
            if url.as_str().contains(needle) {
                Ok(url.to_string())
            } else {
                Err(format!("address: {url}"))
            }
        })
        .await
    }

    /// The page's current DOM, serialized.
    pub async fn page_source(&self) -> Result<String, Error> {
        self.client.source().await.map_err(|e| wd("page source", e))
    }

    /// The first element matching `css`, now (no waiting).
    pub async fn find(&self, css: &str) -> Result<Element, Error> {
        self.client
            .find(Locator::Css(css))
            .await
            .map_err(|e| wd(format!("find `{css}`"), e))
    }

    /// The first element matching `css`, polling until it exists.
    pub async fn wait_for(&self, css: &str) -> Result<Element, Error> {
        self.poll(format!("element `{css}`"), || async move {
            self.client
                .find(Locator::Css(css))
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// The text of the first element matching `css`, polling until it contains `needle`.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> Result<String, Error> {
        self.poll(format!("`{needle}` in `{css}`"), || async move {
            let el = self.client.find(Locator::Css(css)).await;
            let text = el.map_err(|e| e.to_string())?.text().await;
            let text = text.map_err(|e| e.to_string())?;
            if text.contains(needle) {
                Ok(text)
            } else {
                Err(format!("text: {text:?}"))
            }
        })
        .await
    }

    /// Polls until the JavaScript expression `condition` is true on the page.
    pub async fn wait_until(&self, condition: &str) -> Result<(), Error> {
        let script = format!("return !!({condition});");
        self.poll(format!("`{condition}`"), || {
            let script = script.clone();
            async move {
                match self.client.execute(&script, vec![]).await {
                    Ok(Value::Bool(true)) => Ok(()),
                    Ok(v) => Err(format!("value: {v}")),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
        .await
    }

    /// The rendered text of the first element matching `css`, now (no waiting).
    pub async fn text(&self, css: &str) -> Result<String, Error> {
        let el = self.find(css).await?;
        el.text()
            .await
            .map_err(|e| wd(format!("text of `{css}`"), e))
    }

    /// Replaces the value of the field matching `css` (waiting for it) with `text`, typed.
    pub async fn fill(&self, css: &str, text: &str) -> Result<(), Error> {
        let el = self.wait_for(css).await?;
        el.clear()
            .await
            .map_err(|e| wd(format!("clear `{css}`"), e))?;
        el.send_keys(text)
            .await
            .map_err(|e| wd(format!("type into `{css}`"), e))
    }

    /// Chooses `path` (a file, or a folder for an `webkitdirectory` input) in the file
    /// input matching `css`, as a person picking it in the file dialog would.
    pub async fn choose_file(&self, css: &str, path: &std::path::Path) -> Result<(), Error> {
        let el = self.wait_for(css).await?;
        el.send_keys(&path.to_string_lossy())
            .await
            .map_err(|e| wd(format!("choose {} in `{css}`", path.display()), e))
    }

    /// Presses keys on the keyboard, wherever the focus is (`\u{E004}` Tab, `\u{E007}`
    /// Enter, ` ` Space, or text).
    pub async fn press(&self, keys: &str) -> Result<(), Error> {
        use fantoccini::actions::{InputSource as _, KeyAction, KeyActions};
        let mut actions = KeyActions::new("keyboard".into());
        for value in keys.chars() {
            actions = actions
                .then(KeyAction::Down { value })
                .then(KeyAction::Up { value });
        }
        self.client
            .perform_actions(actions)
            .await
            .map_err(|e| wd(format!("press {keys:?}"), e))
    }

    /// Clicks the element matching `css` (waiting for it).
    pub async fn click(&self, css: &str) -> Result<(), Error> {
        let el = self.wait_for(css).await?;
        el.click()
            .await
            .map_err(|e| wd(format!("click `{css}`"), e))
    }

    /// Runs `script` as the body of a function called with `args`; answers what it returns.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> Result<Value, Error> {
        self.client
            .execute(script, args)
            .await
            .map_err(|e| wd(format!("execute `{script}`"), e))
    }

    /// Whether a script set `window.<name>`: the probe of injection tests, whose payloads
    /// set a marker (`<img src=x onerror="window.__xss=1">`) instead of calling `alert`.
    pub async fn js_marker(&self, name: &str) -> Result<bool, Error> {
        let v = self
            .execute(
                "return window[arguments[0]] !== undefined;",
                vec![json!(name)],
            )
            .await?;
        Ok(v == Value::Bool(true))
    }

    /// The text of the alert, confirm or prompt dialog open now, dismissing it; `None` when
    /// there is none. (An alert left open makes chromedriver fail the next command with
    /// "unexpected alert open", so an unexpected `alert` fails the step anyway.)
    pub async fn alert(&self) -> Result<Option<String>, Error> {
        match self.client.get_alert_text().await {
            Ok(text) => {
                self.client
                    .dismiss_alert()
                    .await
                    .map_err(|e| wd("dismiss alert", e))?;
                Ok(Some(text))
            }
            Err(CmdError::Standard(e)) if e.error == ErrorStatus::NoSuchAlert => Ok(None),
            Err(e) => Err(wd("alert text", e)),
        }
    }

    /// Calls `probe` until it answers `Ok`, for at most the wait (see [`Browser::set_wait`]).
    async fn poll<T, F, Fut>(&self, what: String, mut probe: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let start = Instant::now();
        loop {
            let last = match probe().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if start.elapsed() >= self.wait {
                return Err(Error::Timeout {
                    what,
                    waited: start.elapsed(),
                    last,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let Some(profile) = self.profile.take() else {
            return; // closed
        };
        // The session was not closed (a panic, an early return): no WebDriver call can be
        // awaited here, so kill chromedriver's group, which holds every Chromium process.
        self.driver.signal_group(SIGKILL);
        let path = profile.path().to_owned();
        // Chromium may still be dying and writing: retry the removal briefly.
        for _ in 0..20 {
            if std::fs::remove_dir_all(&path).is_ok() || !path.exists() {
                break;
            }
            std::thread::sleep(POLL);
        }
        drop(profile);
    }
}

/// `target/browser-screens`, found from the test binary (`target/<profile>/deps/<test>`).
fn screens_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let target = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .and_then(Path::parent);
    match target {
        Some(t) => t.join("browser-screens"),
        None => std::env::temp_dir().join("browser-screens"),
    }
}

/// A file-name-safe form of a test or step name (`module::test` becomes `module-test`).
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.split('-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("-")
}
