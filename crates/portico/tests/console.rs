//! The publisher console and the developer portal in a real headless Chromium, against the
//! real `portico` binary and real gateway nodes (issue 14): an admin links gateways with the
//! form and watches their nodes; a publisher is not offered the form and is refused when
//! posting it anyway, then deploys a revision to two gateways with the deploy dialog and
//! watches the nodes reach it; a subscriber signs up, is approved, sees one set of URLs per
//! gateway their role may see, makes an application, subscribes, gets a key shown once and
//! tries the API through the sandbox gateway, revokes a key, then changes their password,
//! which ends their session; a script in an API's description never runs. An admin
//! creates, re-roles and deletes users; a publisher uses the lifecycle buttons and the
//! deploy dialog (visibility one click away) by keyboard; a subscriber pages through the
//! portal's search, applications, subscriptions and keys, and gets client credentials.

#![allow(clippy::unwrap_used)] // test helpers panic on setup failures

use portico_testkit::browser::Error as BrowserError;
use portico_testkit::{Browser, Client, Upstream};
use serde_json::{Value, json};
use tempfile::TempDir;

mod common;

use common::*;

async fn sign_out(b: &Browser) -> Result<(), BrowserError> {
    b.click("#signout button[type=submit]").await?;
    b.wait_for("#signin").await?;
    Ok(())
}

/// Sets a `<select>`'s value as a person picking the option would.
async fn choose(b: &Browser, css: &str, value: &str) -> Result<(), BrowserError> {
    let found = b
        .execute(
            "const s = document.querySelector(arguments[0]);
             if (!s || ![...s.options].some(o => o.value === arguments[1])) { return false; }
             s.value = arguments[1];
             s.dispatchEvent(new Event('change', { bubbles: true }));
             return true;",
            vec![json!(css), json!(value)],
        )
        .await?;
    assert_eq!(found, json!(true), "no option `{value}` in `{css}`");
    Ok(())
}

/// The values of the options of the `<select>` matching `css`.
async fn options(b: &Browser, css: &str) -> Result<Vec<String>, BrowserError> {
    let v = b
        .execute(
            "return [...document.querySelectorAll(arguments[0] + ' option')].map(o => o.value);",
            vec![json!(css)],
        )
        .await?;
    Ok(serde_json::from_value(v).unwrap())
}

/// Posts a form from the page (as a forged or hand-made request would), with the page's
/// own CSRF token: the answer's status.
async fn post_from_page(b: &Browser, path: &str, fields: Value) -> Result<u16, BrowserError> {
    let v = b
        .execute(
            "const f = new URLSearchParams(arguments[1]);
             f.set('csrf', document.querySelector('#signout input[name=csrf]').value);
             return fetch(arguments[0], { method: 'POST', body: f, credentials: 'same-origin',
                                          redirect: 'manual' }).then(r => r.status);",
            vec![json!(path), fields],
        )
        .await?;
    Ok(v.as_u64().unwrap() as u16)
}

/// Opens each page at a phone's width (390 px) and checks nothing runs off the side (a
/// screenshot of the last one is kept), then goes back to a desktop's width.
async fn fit_a_phone(b: &Browser, cp: &ControlPlane, paths: &[&str]) -> Result<(), BrowserError> {
    b.client().set_window_size(390, 844).await.unwrap();
    for path in paths {
        b.goto(&format!("{}{path}", cp.url)).await?;
        b.wait_for("main").await?;
        // What runs off the side, by tag, id and class (none when the page fits).
        let wide = b
            .execute(
                "if (document.documentElement.scrollWidth <= window.innerWidth) { return []; }
                 return [...document.querySelectorAll('main *')]
                   .filter(e => e.getBoundingClientRect().right > window.innerWidth)
                   .map(e => e.tagName + '#' + e.id + '.' + e.className);",
                vec![],
            )
            .await?;
        assert_eq!(wide, json!([]), "{path} is wider than a phone");
        // Every control a person fills in has a label that names it.
        let unlabelled = b
            .execute(
                "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                   .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
                   .map(e => e.id || e.name);",
                vec![],
            )
            .await?;
        assert_eq!(unlabelled, json!([]), "controls without a label on {path}");
    }
    b.screenshot("phone").await?;
    b.client().set_window_size(1280, 800).await.unwrap();
    Ok(())
}

/// The `aria-invalid` and `aria-describedby` of the field matching `css` (null when unset):
/// how assistive technology learns that a field was refused, and why.
async fn invalid(b: &Browser, css: &str) -> Result<Value, BrowserError> {
    b.execute(
        "const e = document.querySelector(arguments[0]);
         return [e.getAttribute('aria-invalid'), e.getAttribute('aria-describedby')];",
        vec![json!(css)],
    )
    .await
}

/// Presses keys in the focused element (`\u{E004}` Tab, `\u{E007}` Enter, ` ` Space).
async fn press(b: &Browser, keys: &str) {
    b.press(keys).await.unwrap();
}

/// Presses Tab until the element matching `css` has the focus, as a keyboard user moves
/// through a page (a bounded number of times: a control Tab never reaches fails).
async fn tab_to(b: &Browser, css: &str) {
    for _ in 0..80 {
        let there = b
            .execute(
                "return document.activeElement !== null && document.activeElement.matches(arguments[0]);",
                vec![json!(css)],
            )
            .await
            .unwrap();
        if there == json!(true) {
            return;
        }
        press(b, "\u{E004}").await;
    }
    panic!("Tab never reaches `{css}`");
}

/// Opens `page`'s deploy dialog and, by keyboard alone, chooses the second version in
/// the `version` select and ticks the `gateway` box (the dialog is left open to submit).
async fn choose_by_keyboard(
    b: &Browser,
    page: &str,
    version: &str,
    gateway: &str,
) -> Result<(), BrowserError> {
    b.goto(page).await?;
    b.wait_for("#deploy-dialog").await?;
    tab_to(b, "#deploy-dialog summary").await;
    press(b, "\u{E007}").await;
    tab_to(b, version).await;
    // A select takes the option's first letter, as people type it.
    press(b, "2").await;
    tab_to(b, gateway).await;
    press(b, " ").await;
    Ok(())
}

/// Fills and submits the console's link form for `node` as gateway `name` of type `kind`.
async fn link_with_form(
    b: &Browser,
    cp: &ControlPlane,
    node: &Node,
    name: &str,
    kind: &str,
) -> Result<(), BrowserError> {
    b.goto(&format!("{}/console/gateways", cp.url)).await?;
    b.fill("#link-name", name).await?;
    choose(b, "#link-type", kind).await?;
    b.fill(
        "#link-url",
        &format!("http://127.0.0.1:{}", node.admin_port),
    )
    .await?;
    b.fill("#link-admin_port", &node.admin_port.to_string())
        .await?;
    b.fill("#link-listen", &node.traffic_port.to_string())
        .await?;
    b.fill("#link-jwt_secret", &node.secret).await?;
    b.fill("#link-api_token", &node.token).await?;
    b.click("#link-form button[type=submit]").await?;
    // Linked: the gateway's own page, where its nodes show up.
    b.wait_for_text("h1", &format!("Gateway {name}")).await?;
    b.wait_for("#nodes").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_links_with_the_form_and_a_publisher_deploys_to_two_gateways() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let (mut eu, mut us) = (
        init_node(root.path(), "eu", &cp.url).await,
        init_node(root.path(), "us", &cp.url).await,
    );
    eu.start().await;
    us.start().await;
    user(&cp, "ada", &["admin"]).await;
    user(&cp, "pat", &["publisher"]).await;
    let (one, two) = (Upstream::named("one").await, Upstream::named("two").await);
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/services",
            Some(json!({"name": "backend", "endpoints": ["127.0.0.1:9"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let b = Browser::start_named("console-deploy").await;

    b.step("admin links two gateways with the form", async {
        sign_in(&b, &cp, "console", "ada").await?;
        b.goto(&format!("{}/console/gateways", cp.url)).await?;
        // The Toca form: its fields, the admin port prefilled with 2020.
        let port = b
            .execute(
                "return document.querySelector('#link-admin_port').value;",
                vec![],
            )
            .await?;
        assert_eq!(port, json!("2020"));
        // A wrong field is shown beside the field, the other values kept, nothing linked.
        b.fill("#link-name", "Bad Name!").await?;
        b.fill("#link-jwt_secret", "s").await?;
        b.fill("#link-api_token", "t").await?;
        b.click("#link-form button[type=submit]").await?;
        let err = b.wait_for("#link-name-error").await?.text().await.unwrap();
        assert!(!err.is_empty());
        assert_eq!(
            invalid(&b, "#link-name").await?,
            json!(["true", "link-name-error"])
        );
        assert_eq!(invalid(&b, "#link-url").await?, json!([null, null]));
        let rows = b
            .execute(
                "return document.querySelectorAll('#gateways tr[data-gateway]').length;",
                vec![],
            )
            .await?;
        assert_eq!(
            rows,
            json!(1),
            "the built-in gateway only: nothing was linked"
        );
        link_with_form(&b, &cp, &eu, "eu", "production").await?;
        link_with_form(&b, &cp, &us, "us", "sandbox").await?;
        b.goto(&format!("{}/console/gateways", cp.url)).await?;
        let rows = b.text("#gateways").await?;
        assert!(
            rows.contains("production") && rows.contains("sandbox"),
            "{rows}"
        );
        // The secrets given are never sent back.
        let html = b.page_source().await?;
        assert!(!html.contains(&eu.secret) && !html.contains(&eu.token));
        // A certificate uploaded with the form; a wrong one is said beside the field, and
        // the key typed is never sent back.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["shop.example".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        b.click("nav a[href='/console/certificates']").await?;
        b.fill("#certificate-name", "shop").await?;
        b.fill("#certificate-cert", "not a certificate").await?;
        b.fill("#certificate-key", &key.serialize_pem()).await?;
        b.click("#certificate-form button[type=submit]").await?;
        b.wait_for("#certificate-pem-error").await?;
        for field in ["#certificate-cert", "#certificate-key"] {
            let marked = invalid(&b, field).await?;
            assert_eq!(marked, json!(["true", "certificate-pem-error"]), "{field}");
        }
        assert_eq!(invalid(&b, "#certificate-name").await?, json!([null, null]));
        assert!(!b.page_source().await?.contains("PRIVATE KEY"));
        b.fill("#certificate-cert", &cert.pem()).await?;
        b.fill("#certificate-key", &key.serialize_pem()).await?;
        b.click("#certificate-form button[type=submit]").await?;
        let row = b
            .wait_for_text("#uploaded tr[data-certificate=shop]", "shop.example")
            .await?;
        assert!(row.contains("UTC"), "{row}");
        // The audit log names who linked them.
        b.click("nav a[href='/console/audit']").await?;
        let log = b.wait_for_text("#list", "user:ada").await?;
        // Roles of the operator's own, created with the roles page's form.
        b.click("nav a[href='/console/roles']").await?;
        b.fill("#role-name", "partner").await?;
        b.fill("#role-description", "our partners").await?;
        b.click("#role-form button[type=submit]").await?;
        b.wait_for_text("#list", "our partners").await?;
        b.goto(&format!("{}/console/audit", cp.url)).await?;
        assert!(log.contains("gateway") && log.contains("eu"), "{log}");
        Ok(())
    })
    .await
    .unwrap();

    b.step("the gateway's node shows in sync, by itself", async {
        b.goto(&format!("{}/console/gateways/eu", cp.url)).await?;
        // The page was drawn before the node had its first snapshot (or just after):
        // the table updates itself until the node reports the gateway's version.
        b.wait_for_text("#nodes", "in_sync").await?;
        // Kept for the README and for whoever reads a failed run.
        b.screenshot("gateway-in-sync").await?;
        Ok(())
    })
    .await
    .unwrap();

    // The API, with revision 1 on eu (through the admin API, as the CLI would).
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "Pets", "version": "v1", "context": "/pets",
                        "production_endpoints": [format!("http://{}", one.addr)],
                        "sandbox_endpoints": [format!("http://{}", one.addr)]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp.api("POST", "/api/v1/apis/pets-v1/revisions", None).await;
    assert_eq!(st, 201, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis/pets-v1/deployments",
            Some(json!({"revision": 1, "gateways": ["eu"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let client = Client::new();
    eventually_serves(&client, &eu.url("/pets/x"), "one").await;
    // The API's endpoints change; revision 2 is made in the console.
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/apis/pets-v1", cp.url))
        .bearer_auth(&cp.token)
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let spec = json!({"name": "Pets", "version": "v1", "context": "/pets",
                      "production_endpoints": [format!("http://{}", two.addr)],
                      "sandbox_endpoints": [format!("http://{}", two.addr)]});
    let (st, v) = cp
        .api_with(
            "PUT",
            "/api/v1/apis/pets-v1",
            Some(spec),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(st, 200, "{v}");

    b.step(
        "a publisher is not offered the link form and is refused when posting it",
        async {
            sign_out(&b).await?;
            sign_in(&b, &cp, "console", "pat").await?;
            b.goto(&format!("{}/console/gateways", cp.url)).await?;
            b.wait_for("#gateways tr[data-gateway=eu]").await?;
            assert!(
                b.find("#link-form").await.is_err(),
                "no link form for a publisher"
            );
            let status = post_from_page(
                &b,
                "/console/gateways/link",
                json!({"name": "evil", "type": "production", "admin_port": "2020",
                   "jwt_secret": "s", "api_token": "t"}),
            )
            .await?;
            assert_eq!(status, 403);
            // Admin-only sections are not offered, and refused when asked for.
            let nav = b.text("header nav").await?;
            assert!(nav.contains("APIs") && nav.contains("Services"), "{nav}");
            for admin_only in ["Users", "Roles", "Audit"] {
                assert!(!nav.contains(admin_only), "{admin_only} offered: {nav}");
            }
            let status = b
                .execute(
                    "return fetch('/console/audit').then(r => r.status);",
                    vec![],
                )
                .await?;
            assert_eq!(status, json!(403));
            // Lists of other kinds, drawn like the API's: a service with its endpoint.
            b.click("nav a[href='/console/services']").await?;
            let services = b.wait_for_text("#list", "backend").await?;
            assert!(services.contains("127.0.0.1:9"), "{services}");
            // Created and edited as its JSON definition, problems listed by field path.
            b.click("#new").await?;
            b.fill("#definition", r#"{"name": "orders", "endpoints": []}"#)
                .await?;
            b.click("#editor-form button[type=submit]").await?;
            b.wait_for_text("#problems", "endpoints").await?;
            b.fill(
                "#definition",
                r#"{"name": "orders", "endpoints": ["127.0.0.1:7"]}"#,
            )
            .await?;
            b.click("#editor-form button[type=submit]").await?;
            b.wait_for_text("#list tr[data-key=orders]", "127.0.0.1:7")
                .await?;
            b.click("#list tr[data-key=orders] a.edit").await?;
            b.fill(
                "#definition",
                r#"{"name": "orders", "endpoints": ["127.0.0.1:8"]}"#,
            )
            .await?;
            b.click("#editor-form button[type=submit]").await?;
            b.wait_for_text("#list tr[data-key=orders]", "127.0.0.1:8")
                .await?;
            // Apps are keyed by their slug, not their display name.
            b.click("nav a[href='/console/apps']").await?;
            b.click("#new").await?;
            b.fill("#definition", r#"{"slug": "shop", "name": "The Shop"}"#)
                .await?;
            b.click("#editor-form button[type=submit]").await?;
            b.click("#list tr[data-key=shop] a.edit").await?;
            b.wait_for_text("h1", "Edit app shop").await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    let (_, list) = cp.api("GET", "/api/v1/gateways", None).await;
    assert!(
        !list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "evil"),
        "{list}"
    );

    b.step(
        "the publisher creates an API with the form, errors shown beside their fields",
        async {
            b.goto(&format!("{}/console/apis", cp.url)).await?;
            b.click("#new-api").await?;
            b.fill("#api-name", "Orders").await?;
            b.fill("#api-version", "v1").await?;
            b.fill("#api-context", "orders").await?;
            b.fill("#api-production_endpoints", "not a url").await?;
            b.click("#api-form button[type=submit]").await?;
            b.wait_for("#api-context-error").await?;
            b.wait_for("#api-production_endpoints-error").await?;
            assert!(
                b.find("#api-name-error").await.is_err(),
                "the name was right"
            );
            // What was typed is kept.
            let kept = b
                .execute("return document.querySelector('#api-name').value;", vec![])
                .await?;
            assert_eq!(kept, json!("Orders"));
            b.fill("#api-context", "/orders").await?;
            b.fill("#api-production_endpoints", &format!("http://{}", one.addr))
                .await?;
            b.click("#api-form button[type=submit]").await?;
            b.wait_for_text("h1", "Orders").await?;
            // Edited: the description changes, the rest stays.
            b.click("#edit-api").await?;
            b.fill("#api-description", "Orders, by customer.").await?;
            b.click("#api-form button[type=submit]").await?;
            // The API's page (the form's own heading names the API too).
            b.wait_for("#lifecycle").await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    let (_, orders) = cp.api("GET", "/api/v1/apis/orders-v1", None).await;
    assert_eq!(
        orders["spec"]["description"], "Orders, by customer.",
        "{orders}"
    );
    assert_eq!(orders["spec"]["context"], "/orders", "{orders}");
    assert_eq!(orders["version"], 2, "{orders}");

    b.step("an edit made meanwhile is not overwritten", async {
        b.goto(&format!("{}/console/apis/orders-v1/edit", cp.url))
            .await?;
        b.wait_for("#api-form").await?;
        let (st, v) = cp
            .api_with(
                "PUT",
                "/api/v1/apis/orders-v1",
                Some(
                    json!({"name": "Orders", "version": "v1", "context": "/orders",
                            "description": "changed meanwhile",
                            "production_endpoints": [format!("http://{}", one.addr)]}),
                ),
                &[("if-match", "\"2\"")],
            )
            .await;
        assert_eq!(st, 200, "{v}");
        b.fill("#api-description", "from the stale form").await?;
        b.click("#api-form button[type=submit]").await?;
        b.wait_for(".error").await?;
        Ok(())
    })
    .await
    .unwrap();
    let (_, orders) = cp.api("GET", "/api/v1/apis/orders-v1", None).await;
    assert_eq!(
        orders["spec"]["description"], "changed meanwhile",
        "{orders}"
    );

    b.step(
        "the publisher makes revision 2 and deploys it to two gateways",
        async {
            b.goto(&format!("{}/console/apis/pets-v1", cp.url)).await?;
            b.fill("#revision-note", "endpoints moved to two").await?;
            b.click("#revision-form button[type=submit]").await?;
            b.wait_for_text(".notice", "Revision 2 created").await?;
            let revisions = b.text("#revisions").await?;
            assert!(revisions.contains("endpoints moved to two"), "{revisions}");
            // Who made each: revision 1 the admin token, revision 2 this publisher.
            assert_eq!(b.text("#revisions tr[data-revision='2'] .by").await?, "pat");
            // The two revisions compared: the endpoint that changed, and nothing else.
            b.click("#diff-form button[type=submit]").await?;
            b.wait_for("#diff").await?;
            let removed = b.text("#diff .del").await?;
            let added = b.text("#diff .add").await?;
            assert!(removed.contains(&one.addr.to_string()), "{removed}");
            assert!(added.contains(&two.addr.to_string()), "{added}");
            let changed = b
                .execute(
                    "return document.querySelectorAll('#diff .add, #diff .del').length;",
                    vec![],
                )
                .await?;
            assert_eq!(changed, json!(4), "two endpoints lists, one line each way");
            b.goto(&format!("{}/console/apis/pets-v1", cp.url)).await?;
            // The dialog lists every gateway with its type; two are chosen.
            b.click("#deploy-dialog summary").await?;
            let dialog = b.text("#deploy-form").await?;
            assert!(
                dialog.contains("eu") && dialog.contains("production"),
                "{dialog}"
            );
            assert!(
                dialog.contains("us") && dialog.contains("sandbox"),
                "{dialog}"
            );
            choose(&b, "#deploy-revision", "2").await?;
            b.click("#deploy-eu").await?;
            b.click("#deploy-us").await?;
            b.screenshot("deploy-dialog").await?;
            b.click("#deploy-form button[type=submit]").await?;
            b.wait_for_text(".notice", "Revision 2 deployed to eu, us")
                .await?;
            // Each gateway's row follows its nodes until all are at the new version.
            b.wait_for_text("#deployments tr[data-gateway=eu] .nodes", "1 of 1 nodes")
                .await?;
            b.wait_for_text("#deployments tr[data-gateway=us] .nodes", "1 of 1 nodes")
                .await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    eventually_serves(&client, &eu.url("/pets/x"), "two").await;
    eventually_serves(&client, &us.url("/pets/x"), "two").await;

    b.step("undeploy from one gateway", async {
        b.click("#deployments tr[data-gateway=us] form.undeploy button")
            .await?;
        b.wait_for_text(".notice", "Undeployed from us").await?;
        assert!(b.find("#deployments tr[data-gateway=us]").await.is_err());
        Ok(())
    })
    .await
    .unwrap();

    b.step("roll eu back to revision 1 with one click", async {
        b.click("#deployments tr[data-gateway=eu] form.rollback button")
            .await?;
        b.wait_for_text(".notice", "Revision 1 deployed to eu")
            .await?;
        b.wait_for_text("#deployments tr[data-gateway=eu]", "1 of 1 nodes")
            .await?;
        Ok(())
    })
    .await
    .unwrap();
    eventually_serves(&client, &eu.url("/pets/x"), "one").await;

    b.step("the console at phone width", async {
        fit_a_phone(
            &b,
            &cp,
            &[
                "/console/gateways",
                "/console/apis/pets-v1",
                "/console/services",
            ],
        )
        .await
    })
    .await
    .unwrap();

    b.close().await;
    eu.stop().await;
    us.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_signs_up_subscribes_and_tries_the_api_through_the_sandbox() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &["--portal-signup", "approval"]).await;
    let (mut prod, mut sandbox) = (
        init_node(root.path(), "prod", &cp.url).await,
        init_node(root.path(), "sandbox", &cp.url).await,
    );
    prod.start().await;
    sandbox.start().await;
    cp.link(&prod, "prod", "production", &[]).await;
    cp.link(&sandbox, "sandbox", "sandbox", &[]).await;
    // Gateways a subscriber may not see: one for partners only, one denying subscribers.
    for g in [
        json!({"name": "partners", "hosts": ["p.example"], "visibility": {"roles_allowed": ["partner"]}}),
        json!({"name": "staff", "hosts": ["staff.example"], "visibility": {"roles_denied": ["subscriber"]}}),
    ] {
        let (st, v) = cp
            .api("POST", "/api/v1/roles", Some(json!({"name": "partner"})))
            .await;
        assert!(st == 201 || st == 409, "{v}");
        let (st, v) = cp.api("POST", "/api/v1/gateways", Some(g)).await;
        assert_eq!(st, 201, "{v}");
    }
    user(&cp, "ada", &["admin"]).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/tiers",
            Some(json!({"name": "bronze", "limit": 100000})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (live, test) = (Upstream::named("live").await, Upstream::named("test").await);
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "Pets", "version": "v1", "context": "/pets", "auth": "any",
                        "description": "Pets. <script>window.__xss = 1</script><img src=x onerror=\"window.__xss = 1\">",
                        "production_endpoints": [format!("http://{}", live.addr)],
                        "sandbox_endpoints": [format!("http://{}", test.addr)],
                        "subscription_tiers": ["bronze"],
                        "openapi": {
                            "openapi": "3.0.3",
                            "info": {"title": "Pets", "version": "1.0",
                                     "description": "<img src=x onerror=\"window.__xss = 1\">"},
                            "paths": {"/pets/{id}": {
                                "parameters": [{"name": "id", "in": "path", "required": true}],
                                "get": {"summary": "One pet <script>window.__xss = 1</script>",
                                        "responses": {"200": {"description": "the pet"},
                                                      "404": {"description": "no such pet"}}}}}
                        }})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    cp.api("POST", "/api/v1/apis/pets-v1/revisions", None).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis/pets-v1/deployments",
            Some(json!({"revision": 1, "gateways": ["prod", "sandbox", "partners", "staff"]})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis/pets-v1/lifecycle",
            Some(json!({"state": "published"})),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let b = Browser::start_named("portal-subscriber").await;

    b.step("sign up, then wait for approval", async {
        sign_up(&b, &cp, "sam", "approv").await?;
        // Not yet: the sign-in says why.
        b.goto(&format!("{}/portal/login", cp.url)).await?;
        b.fill("#name", "sam").await?;
        b.fill("#password", PASSWORD).await?;
        b.click("#signin-form button[type=submit]").await?;
        b.wait_for_text(".error", "approv").await?;
        Ok(())
    })
    .await
    .unwrap();

    b.step("an admin approves in the console", async {
        sign_in(&b, &cp, "console", "ada").await?;
        b.goto(&format!("{}/console/users", cp.url)).await?;
        b.wait_for_text("#users tr[data-user=sam]", "pending")
            .await?;
        b.click("#users tr[data-user=sam] form.approve button")
            .await?;
        b.wait_for_text(".notice", "Approved sam").await?;
        sign_out(&b).await?;
        Ok(())
    })
    .await
    .unwrap();

    b.step("the API page: one URL set per gateway the subscriber may see, no script run", async {
        sign_in(&b, &cp, "portal", "sam").await?;
        b.goto(&format!("{}/portal", cp.url)).await?;
        b.click("#apis a[href='/portal/apis/pets-v1']").await?;
        b.wait_for("#description").await?;
        let shown: Vec<String> = serde_json::from_value(
            b.execute(
                "return [...document.querySelectorAll('section.gateway')].map(s => s.dataset.gateway);",
                vec![],
            )
            .await?,
        )
        .unwrap();
        assert_eq!(shown, ["prod", "sandbox"]);
        let urls = b.text("section.gateway[data-gateway=sandbox]").await?;
        assert!(urls.contains(&sandbox.url("/pets")), "{urls}");
        // The description is text, not markup.
        assert!(b.text("#description").await?.contains("<script>"));
        // The OpenAPI document, readable: each operation with its parameters and answers.
        let reference = b.text("#reference").await?;
        assert!(reference.contains("API reference: Pets"), "{reference}");
        b.click("#reference details.operation summary").await?;
        let op = b.text("#reference details.operation").await?;
        assert!(op.contains("GET") && op.contains("/pets/{id}"), "{op}");
        assert!(op.contains("id (path, required)") && op.contains("404 no such pet"), "{op}");
        assert!(!b.js_marker("__xss").await?, "a script in the description ran");
        assert_eq!(b.alert().await?, None);
        // No application yet: the Try Out says to make one.
        assert!(b.find("#tryout").await.is_err());
        Ok(())
    })
    .await
    .unwrap();

    let key = b
        .step(
            "an application, a subscription and a key shown once",
            async {
                b.goto(&format!("{}/portal/applications", cp.url)).await?;
                b.fill("#application-name", "sams-app").await?;
                b.click("#application-form button[type=submit]").await?;
                b.wait_for_text("h1", "sams-app").await?;
                choose(&b, "#subscribe-api", "pets-v1").await?;
                // On one of the tiers the API offers.
                choose(&b, "#subscribe-tier", "bronze").await?;
                b.click("#subscribe-form button[type=submit]").await?;
                b.wait_for_text("#subscriptions", "pets-v1 (tier bronze)")
                    .await?;
                choose(&b, "#key-type", "sandbox").await?;
                b.click("#key-form button[type=submit]").await?;
                let key = b.wait_for("#secret-value").await?.text().await.unwrap();
                assert!(!key.is_empty());
                // Shown once: the page opened again has its hint only.
                b.goto(&format!("{}/portal/applications/sams-app", cp.url))
                    .await?;
                b.wait_for_text("#keys", "sandbox").await?;
                assert!(b.find("#secret-value").await.is_err());
                assert!(!b.page_source().await?.contains(&key));
                Ok(key)
            },
        )
        .await
        .unwrap();
    // The key works on the sandbox gateway, where the sandbox endpoints answer.
    let client = Client::new();
    let mut answer = String::new();
    for _ in 0..600 {
        let mut req = portico_testkit::client::get(&sandbox.url("/pets/x"));
        req.headers_mut().insert("apikey", key.parse().unwrap());
        let r = client.send(req).await.unwrap();
        answer = format!("{} {}", r.status, r.text());
        if r.status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(answer, "200 OK test");
    let sandbox_get = |key: String| {
        let url = sandbox.url("/pets/x");
        async move {
            let mut req = portico_testkit::client::get(&url);
            req.headers_mut().insert("apikey", key.parse().unwrap());
            Client::new().send(req).await.unwrap().status.as_u16()
        }
    };

    let new_key = b
        .step(
            "regenerating the key: a new one shown once, the old one stops",
            async {
                b.goto(&format!("{}/portal/applications/sams-app", cp.url))
                    .await?;
                b.click("#keys button.regenerate").await?;
                let new_key = b.wait_for("#secret-value").await?.text().await.unwrap();
                assert_ne!(new_key, key);
                b.wait_for_text(".notice", "no longer works").await?;
                let keys = b.text("#keys").await?;
                assert!(keys.contains("revoked"), "{keys}");
                Ok(new_key)
            },
        )
        .await
        .unwrap();
    let mut last = (0, 0);
    for _ in 0..600 {
        last = (
            sandbox_get(key.clone()).await,
            sandbox_get(new_key.clone()).await,
        );
        if last == (401, 200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last, (401, 200), "old key refused, new key served");

    b.step("revoking the key in the portal", async {
        // The only key still active is the one just made.
        b.click("#keys button.revoke").await?;
        b.wait_for_text(".notice", "Revoked").await?;
        assert!(b.find("#keys button.revoke").await.is_err());
        Ok(())
    })
    .await
    .unwrap();
    let mut last = 0;
    for _ in 0..600 {
        last = sandbox_get(new_key.clone()).await;
        if last == 401 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(last, 401, "the revoked key is refused at the gateway");

    b.step("Try Out through the sandbox gateway", async {
        b.goto(&format!("{}/portal/apis/pets-v1", cp.url)).await?;
        b.wait_for("#tryout").await?;
        let gateways = options(&b, "#tryout-gateway").await?;
        assert_eq!(gateways, [prod.url("/pets"), sandbox.url("/pets")]);
        assert_eq!(options(&b, "#tryout-application").await?, ["sams-app"]);
        choose(&b, "#tryout-gateway", &sandbox.url("/pets")).await?;
        b.fill("#tryout-path", "/x").await?;
        b.click("#tryout-send").await?;
        b.wait_for_text("#tryout-status", "200").await?;
        b.screenshot("try-out").await?;
        assert_eq!(b.text("#tryout-body-out").await?, "test");
        // Production, through the other gateway.
        choose(&b, "#tryout-gateway", &prod.url("/pets")).await?;
        b.click("#tryout-send").await?;
        b.wait_for_text("#tryout-body-out", "live").await?;
        Ok(())
    })
    .await
    .unwrap();

    b.step("at phone width nothing runs off the side", async {
        fit_a_phone(
            &b,
            &cp,
            &[
                "/portal",
                "/portal/apis/pets-v1",
                "/portal/applications/sams-app",
            ],
        )
        .await
    })
    .await
    .unwrap();

    b.step("changing the password ends the session", async {
        b.click("#whoami a").await?;
        b.wait_for_text("h1", "Your account").await?;
        b.fill("#current_password", "not my password").await?;
        b.fill("#new_password", "an even longer passphrase").await?;
        b.click("#password-form button[type=submit]").await?;
        b.wait_for_text("#current_password-error", "current password")
            .await?;
        assert_eq!(
            invalid(&b, "#current_password").await?,
            json!(["true", "current_password-error"])
        );
        b.fill("#current_password", PASSWORD).await?;
        b.fill("#new_password", "an even longer passphrase").await?;
        b.click("#password-form button[type=submit]").await?;
        b.wait_for("#signin-form").await?;
        // Signed out everywhere: the applications ask for a sign-in again.
        b.goto(&format!("{}/portal/applications", cp.url)).await?;
        b.wait_for("#signin-form").await?;
        Ok(())
    })
    .await
    .unwrap();

    b.close().await;
    prod.stop().await;
    sandbox.stop().await;
}

/// Writes `body` at `rel` under `dir`, making folders.
fn write(dir: &std::path::Path, rel: &str, body: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A `.tar.gz` of `files` (path, content), as a build tool packs a `dist` folder.
fn tar_gz(path: &std::path::Path, files: &[(&str, &[u8])]) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut t = tar::Builder::new(gz);
    for (name, body) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, name, *body).unwrap();
    }
    t.into_inner().unwrap().finish().unwrap();
}

/// Files under `dir`, at any depth.
fn walk_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_count(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Deploys app version `version` to `gateways` with the app page's deploy dialog.
async fn deploy_version(b: &Browser, version: &str, gateways: &[&str]) -> Result<(), BrowserError> {
    b.click("#deploy-dialog summary").await?;
    choose(b, "#deploy-version", version).await?;
    for g in gateways {
        b.click(&format!("#deploy-{g}")).await?;
    }
    b.click("#deploy-form button[type=submit]").await
}

/// The state cell of version `n` in the app page's versions table.
async fn version_state(b: &Browser, n: u32) -> Result<String, BrowserError> {
    b.text(&format!("#versions tr[data-version='{n}'] .state"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_uploads_an_app_runs_a_draft_beside_the_published_version_and_goes_blue_green()
{
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    let (mut blue, mut green) = (
        init_node(root.path(), "blue", &cp.url).await,
        init_node(root.path(), "green", &cp.url).await,
    );
    blue.start().await;
    green.start().await;
    cp.link(&blue, "blue", "production", &[]).await;
    cp.link(&green, "green", "production", &[]).await;
    user(&cp, "pat", &["publisher"]).await;
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apps",
            Some(json!({"slug": "site", "name": "Our site", "spa": true})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    // Version 1 is a folder as a build leaves it; version 2 comes packed.
    let dist = root.path().join("dist");
    write(&dist, "index.html", b"<h1>v1</h1>");
    write(&dist, "assets/app.js", b"console.log('v1');");
    let packed = root.path().join("site-v2.tar.gz");
    tar_gz(
        &packed,
        &[
            ("dist/index.html", b"<h1>v2</h1>"),
            ("dist/assets/app.js", b"console.log('v2');"),
        ],
    );
    let evil = root.path().join("evil.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&evil).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        z.start_file("index.html", opts).unwrap();
        z.start_file("../escape.txt", opts).unwrap();
        std::io::Write::write_all(&mut z, b"out of the root").unwrap();
        z.finish().unwrap();
    }
    let client = Client::new();
    let default_gw = |path: &str| format!("http://127.0.0.1:{}{path}", cp.gateway_port);
    let b = Browser::start_named("console-apps").await;

    b.step("the publisher finds the app and uploads a folder", async {
        sign_in(&b, &cp, "console", "pat").await?;
        b.goto(&format!("{}/console/apps", cp.url)).await?;
        b.click("#list a[href='/console/apps/site']").await?;
        b.wait_for_text("h1", "Our site").await?;
        // Nothing chosen: said beside the form, nothing made.
        b.click("#upload-form button[type=submit]").await?;
        b.wait_for_text(".error", "choose a folder or an archive")
            .await?;
        b.choose_file("#upload-folder", &dist).await?;
        b.fill("#upload-note", "first cut").await?;
        b.click("#upload-form button[type=submit]").await?;
        b.wait_for_text(".notice", "Version 1 uploaded as a draft: 2 files")
            .await?;
        assert_eq!(version_state(&b, 1).await?, "draft");
        Ok(())
    })
    .await
    .unwrap();
    // The folder's own name is not part of the paths: the files are the app's root.
    let (st, v) = cp.api("GET", "/api/v1/apps/site/versions/1", None).await;
    assert_eq!(st, 200, "{v}");
    let mut paths: Vec<&String> = v["files"].as_object().unwrap().keys().collect();
    paths.sort();
    assert_eq!(paths, ["assets/app.js", "index.html"], "{v}");

    b.step(
        "a forged upload is refused before any file is kept",
        async {
            let blobs = root.path().join("data/blobs");
            let before = walk_count(&blobs);
            // From another site the CSRF token is unknown; a file sent before the token is
            // refused too, so nothing reaches the disk either way.
            let statuses = b
                .execute(
                    "const post = (withToken) => {
                   const f = new FormData();
                   f.append('files', new Blob(['<h1>forged</h1>']), 'index.html');
                   if (withToken) {
                     f.append('csrf', document.querySelector('#signout input[name=csrf]').value);
                   }
                   return fetch('/console/apps/site/versions', { method: 'POST', body: f,
                                credentials: 'same-origin' }).then(r => r.status);
                 };
                 return Promise.all([post(false), post(true)]);",
                    vec![],
                )
                .await?;
            assert_eq!(statuses, json!([403, 403]));
            assert_eq!(
                walk_count(&blobs),
                before,
                "a refused upload left files behind"
            );
            b.goto(&format!("{}/console/apps/site", cp.url)).await?;
            b.wait_for("#versions tr[data-version='1']").await?;
            assert!(b.find("#versions tr[data-version='2']").await.is_err());
            Ok(())
        },
    )
    .await
    .unwrap();

    b.step(
        "a draft is refused on production gateways until asked for",
        async {
            deploy_version(&b, "1", &["blue"]).await?;
            b.wait_for_text(".error", "is a draft").await?;
            assert!(b.find("#deployments tr[data-key=blue]").await.is_err());
            // The draft goes to the built-in gateway for testing.
            deploy_version(&b, "1", &["default"]).await?;
            b.wait_for_text(".notice", "Version 1 deployed to default")
                .await?;
            b.wait_for_text("#deployments tr[data-key=default] .version", "draft")
                .await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    eventually_serves(&client, &default_gw("/site/"), "<h1>v1</h1>").await;
    eventually_serves(
        &client,
        &default_gw("/site/assets/app.js"),
        "console.log('v1');",
    )
    .await;

    b.step(
        "publish version 1 and deploy it to blue and green at once",
        async {
            b.click("#versions tr[data-version='1'] form.publish button")
                .await?;
            b.wait_for_text(".notice", "Version 1 is published").await?;
            assert_eq!(version_state(&b, 1).await?, "published");
            deploy_version(&b, "1", &["blue", "green"]).await?;
            b.wait_for_text(".notice", "Version 1 deployed to blue, green")
                .await?;
            // Both nodes reach it, shown as it happens.
            b.wait_for_text("#deployments tr[data-key=blue] .nodes", "1 of 1 nodes")
                .await?;
            b.wait_for_text("#deployments tr[data-key=green] .nodes", "1 of 1 nodes")
                .await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    eventually_serves(&client, &blue.url("/site/"), "<h1>v1</h1>").await;
    eventually_serves(&client, &green.url("/site/"), "<h1>v1</h1>").await;

    b.step("an archive that climbs out of its root is refused", async {
        b.choose_file("#upload-archive", &evil).await?;
        b.click("#upload-form button[type=submit]").await?;
        b.wait_for_text(".error", "escape.txt").await?;
        assert!(b.find("#versions tr[data-version='2']").await.is_err());
        Ok(())
    })
    .await
    .unwrap();

    b.step(
        "version 2 from an archive: a draft on default, the published 1 on blue",
        async {
            b.choose_file("#upload-archive", &packed).await?;
            b.click("#upload-form button[type=submit]").await?;
            b.wait_for_text(".notice", "Version 2 uploaded as a draft: 2 files")
                .await?;
            deploy_version(&b, "2", &["default"]).await?;
            b.wait_for_text("#deployments tr[data-key=default] .version", "2")
                .await?;
            b.wait_for_text("#deployments tr[data-key=blue] .version", "1")
                .await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    eventually_serves(&client, &default_gw("/site/"), "<h1>v2</h1>").await;
    eventually_serves(&client, &blue.url("/site/"), "<h1>v1</h1>").await;

    b.step(
        "blue-green: 2 goes to idle green first, then to blue; blue rolls back in one click",
        async {
            b.click("#versions tr[data-version='2'] form.publish button")
                .await?;
            b.wait_for_text(".notice", "Version 2 is published").await?;
            deploy_version(&b, "2", &["green"]).await?;
            b.wait_for_text("#deployments tr[data-key=green] .version", "2")
                .await?;
            b.wait_for_text("#deployments tr[data-key=green] .nodes", "1 of 1 nodes")
                .await?;
            // Blue still runs 1 (no longer the published version: 2 is).
            let blue_runs = b.text("#deployments tr[data-key=blue] .version").await?;
            assert!(blue_runs.starts_with('1'), "{blue_runs}");
            b.screenshot("app-blue-green").await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    // Green answers with the new version while blue still serves the old one.
    eventually_serves(&client, &green.url("/site/"), "<h1>v2</h1>").await;
    eventually_serves(&client, &blue.url("/site/"), "<h1>v1</h1>").await;

    b.step("traffic moved: blue takes 2, then rolls back", async {
        deploy_version(&b, "2", &["blue"]).await?;
        b.wait_for_text("#deployments tr[data-key=blue] .version", "2")
            .await?;
        b.click("#deployments tr[data-key=blue] form.rollback button")
            .await?;
        b.wait_for_text(".notice", "blue is back on version 1")
            .await?;
        b.wait_for_text("#deployments tr[data-key=blue] .nodes", "1 of 1 nodes")
            .await?;
        Ok(())
    })
    .await
    .unwrap();
    eventually_serves(&client, &blue.url("/site/"), "<h1>v1</h1>").await;

    b.step("undeploy from green", async {
        b.click("#deployments tr[data-key=green] form.undeploy button")
            .await?;
        b.wait_for_text(".notice", "Undeployed from green").await?;
        assert!(b.find("#deployments tr[data-key=green]").await.is_err());
        Ok(())
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let r = client.get(&green.url("/site/")).await;
        if r.status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "green still serves the app"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    b.step(
        "the deploy dialog by keyboard alone: version 2 back to green",
        async {
            let page = format!("{}/console/apps/site", cp.url);
            choose_by_keyboard(&b, &page, "#deploy-version", "#deploy-green").await?;
            tab_to(&b, "#deploy-form button[type=submit]").await;
            press(&b, "\u{E007}").await;
            b.wait_for_text(".notice", "Version 2 deployed to green")
                .await?;
            b.wait_for_text("#deployments tr[data-key=green] .nodes", "1 of 1 nodes")
                .await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    eventually_serves(&client, &green.url("/site/"), "<h1>v2</h1>").await;

    b.step("the app pages at phone width", async {
        fit_a_phone(&b, &cp, &["/console/apps", "/console/apps/site"]).await
    })
    .await
    .unwrap();

    // The audit log names the publisher for each step.
    let (_, v) = cp.api("GET", "/api/v1/audit?kind=app", None).await;
    let by_pat = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "user:pat")
        .count();
    assert!(by_pat >= 8, "{v}");

    b.close().await;
    blue.stop().await;
    green.stop().await;
}

/// The names in the users table now.
async fn listed_users(b: &Browser) -> Result<Vec<String>, BrowserError> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('#users tr[data-user]')].map(r => r.dataset.user);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(v).unwrap())
}

/// The allowed and denied roles shown in the visibility `<details>` matching `css` (null
/// while it is closed).
async fn rules(b: &Browser, css: &str) -> Result<Value, BrowserError> {
    b.execute(
        "const d = document.querySelector(arguments[0]);
         return d.open ? [...d.querySelectorAll('dd')].map(x => x.innerText.trim()) : null;",
        vec![json!(css)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_creates_re_roles_and_deletes_users_and_a_publisher_may_not() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    user(&cp, "ada", &["admin"]).await;
    user(&cp, "pat", &["publisher"]).await;
    let (st, v) = cp
        .api("POST", "/api/v1/roles", Some(json!({"name": "partner"})))
        .await;
    assert_eq!(st, 201, "{v}");
    // A user who owns a portal application: deleting them takes it only when asked to.
    user(&cp, "owner", &["subscriber"]).await;
    let session = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/login", cp.url))
        .json(&json!({"name": "owner", "password": PASSWORD}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = reqwest::Client::new()
        .post(format!("{}/api/v1/portal/applications", cp.url))
        .bearer_auth(&session)
        .json(&json!({"name": "owners-app"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b = Browser::start_named("console-users").await;

    b.step("the admin signs in", async {
        sign_in(&b, &cp, "console", "ada").await
    })
    .await
    .unwrap();

    b.step(
        "an admin creates a user with a role, errors beside the fields",
        async {
            b.click("nav a[href='/console/users']").await?;
            b.wait_for("#user-form").await?;
            // A name the API refuses: said beside the field, marked for assistive technology.
            b.fill("#user-name", "bad name").await?;
            b.fill("#user-password", PASSWORD).await?;
            b.click("#user-form button[type=submit]").await?;
            let err = b.wait_for("#user-name-error").await?.text().await.unwrap();
            assert!(err.contains("without spaces"), "{err}");
            assert_eq!(
                invalid(&b, "#user-name").await?,
                json!(["true", "user-name-error"])
            );
            // What was typed is kept.
            let kept = b
                .execute("return document.querySelector('#user-name').value;", vec![])
                .await?;
            assert_eq!(kept, json!("bad name"));
            assert!(!listed_users(&b).await?.contains(&"bad name".to_owned()));
            // A publisher: the subscriber role offered by default is taken off.
            b.fill("#user-name", "quinn").await?;
            b.fill("#user-password", PASSWORD).await?;
            b.click("#user-roles input[value=subscriber]").await?;
            b.click("#user-roles input[value=publisher]").await?;
            b.click("#user-form button[type=submit]").await?;
            b.wait_for_text(".notice", "Created quinn (publisher).")
                .await?;
            assert_eq!(
                b.text("#users tr[data-user=quinn] .roles").await?,
                "publisher"
            );
            // The same name again: refused beside the name.
            b.fill("#user-name", "Quinn").await?;
            b.fill("#user-password", PASSWORD).await?;
            b.click("#user-form button[type=submit]").await?;
            b.wait_for_text("#user-name-error", "exists already")
                .await?;
            Ok(())
        },
    )
    .await
    .unwrap();
    let (st, v) = cp.api("GET", "/api/v1/users/quinn", None).await;
    assert_eq!((st, &v["roles"]), (200, &json!(["publisher"])), "{v}");
    let (st, _) = cp.api("GET", "/api/v1/users/bad%20name", None).await;
    assert_eq!(st, 404);

    b.step("the users list comes a page at a time", async {
        b.goto(&format!("{}/console/users?limit=2", cp.url)).await?;
        let mut seen = listed_users(&b).await?;
        assert_eq!(seen.len(), 2, "{seen:?}");
        while b.find("#next-page").await.is_ok() {
            b.click("#next-page").await?;
            b.wait_for("#users").await?;
            let page = listed_users(&b).await?;
            assert!(!page.is_empty() && page.len() <= 2, "{page:?}");
            seen.extend(page);
        }
        assert_eq!(seen, ["ada", "owner", "pat", "quinn"]);
        Ok(())
    })
    .await
    .unwrap();

    b.step("the role changed in the user's row", async {
        b.goto(&format!("{}/console/users", cp.url)).await?;
        let row = "#users tr[data-user=quinn]";
        b.click(&format!("{row} details.roles-edit summary"))
            .await?;
        b.click(&format!("{row} input[value=publisher]")).await?;
        b.click(&format!("{row} input[value=partner]")).await?;
        b.click(&format!("{row} .roles-form button[type=submit]"))
            .await?;
        b.wait_for_text(".notice", "quinn now has the roles: partner.")
            .await?;
        assert_eq!(b.text(&format!("{row} .roles")).await?, "partner");
        b.screenshot("users").await?;
        Ok(())
    })
    .await
    .unwrap();
    let (_, v) = cp.api("GET", "/api/v1/users/quinn", None).await;
    assert_eq!(v["roles"], json!(["partner"]), "{v}");

    b.step(
        "users deleted; one who owns applications only when asked",
        async {
            b.click("#users tr[data-user=quinn] form.delete button")
                .await?;
            b.wait_for_text(".notice", "Deleted quinn.").await?;
            assert!(!listed_users(&b).await?.contains(&"quinn".to_owned()));
            // Refused beside the user's row, naming what they own.
            let row = "#users tr[data-user=owner]";
            b.click(&format!("{row} form.delete button")).await?;
            b.wait_for_text(&format!("{row} .field-error"), "owners-app")
                .await?;
            b.click(&format!("{row} form.delete input[name=force]"))
                .await?;
            b.click(&format!("{row} form.delete button")).await?;
            b.wait_for_text(
                ".notice",
                "Deleted owner and their applications owners-app.",
            )
            .await?;
            assert_eq!(listed_users(&b).await?, ["ada", "pat"]);
            Ok(())
        },
    )
    .await
    .unwrap();
    for gone in ["quinn", "owner"] {
        let (st, v) = cp.api("GET", &format!("/api/v1/users/{gone}"), None).await;
        assert_eq!(st, 404, "{gone}: {v}");
    }
    let (st, _) = cp.api("GET", "/api/v1/consumers/owners-app", None).await;
    assert_eq!(st, 404);

    b.step(
        "a publisher is not offered user management and is refused when posting",
        async {
            sign_out(&b).await?;
            sign_in(&b, &cp, "console", "pat").await?;
            assert!(!b.text("header nav").await?.contains("Users"));
            let status = b
                .execute(
                    "return fetch('/console/users').then(r => r.status);",
                    vec![],
                )
                .await?;
            assert_eq!(status, json!(403));
            for (path, fields) in [
                (
                    "/console/users",
                    json!({"name": "mallory", "password": PASSWORD, "roles": "admin"}),
                ),
                ("/console/users/pat/roles", json!({"roles": "admin"})),
                ("/console/users/ada/delete", json!({"force": "true"})),
            ] {
                assert_eq!(post_from_page(&b, path, fields).await?, 403, "{path}");
            }
            Ok(())
        },
    )
    .await
    .unwrap();
    let (_, v) = cp.api("GET", "/api/v1/users", None).await;
    let names: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ada", "pat"], "{v}");
    let (_, v) = cp.api("GET", "/api/v1/users/pat", None).await;
    assert_eq!(v["roles"], json!(["publisher"]), "{v}");

    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_deploys_by_keyboard_with_visibility_in_view_and_moves_the_lifecycle() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &[]).await;
    user(&cp, "ada", &["admin"]).await;
    user(&cp, "pat", &["publisher"]).await;
    let (st, v) = cp
        .api("POST", "/api/v1/roles", Some(json!({"name": "partner"})))
        .await;
    assert_eq!(st, 201, "{v}");
    // Gateways without nodes, two with visibility rules.
    for g in [
        json!({"name": "open", "hosts": ["open.example"]}),
        json!({"name": "partners", "hosts": ["p.example"], "visibility": {"roles_allowed": ["partner"]}}),
        json!({"name": "staff", "hosts": ["s.example"], "visibility": {"roles_denied": ["subscriber"]}}),
    ] {
        let (st, v) = cp.api("POST", "/api/v1/gateways", Some(g)).await;
        assert_eq!(st, 201, "{v}");
    }
    let (st, v) = cp
        .api(
            "POST",
            "/api/v1/apis",
            Some(json!({"name": "Pets", "version": "v1", "context": "/pets",
                        "production_endpoints": ["http://127.0.0.1:9"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    for note in ["first", "second"] {
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/apis/pets-v1/revisions",
                Some(json!({ "note": note })),
            )
            .await;
        assert_eq!(st, 201, "{v}");
    }
    let b = Browser::start_named("console-deploy-keyboard").await;

    b.step("the sign-in form by keyboard alone", async {
        b.goto(&format!("{}/console/login", cp.url)).await?;
        b.wait_for("#signin-form").await?;
        tab_to(&b, "#name").await;
        press(&b, "pat").await;
        tab_to(&b, "#password").await;
        press(&b, PASSWORD).await;
        press(&b, "\u{E007}").await;
        b.wait_for_text("#whoami", "pat").await?;
        Ok(())
    })
    .await
    .unwrap();

    b.step(
        "the deploy dialog shows each gateway's visibility one click away",
        async {
            b.goto(&format!("{}/console/apis/pets-v1", cp.url)).await?;
            b.click("#deploy-dialog summary").await?;
            let open = b.text("#deploy-form [data-gateway=open]").await?;
            assert!(open.contains("visible to everyone"), "{open}");
            let partners = "#deploy-form [data-gateway=partners] details.visibility";
            assert_eq!(
                b.text(&format!("{partners} summary")).await?,
                "allowed roles"
            );
            b.click(&format!("{partners} summary")).await?;
            assert_eq!(rules(&b, partners).await?, json!(["partner", "none"]));
            let staff = "#deploy-form [data-gateway=staff] details.visibility";
            b.click(&format!("{staff} summary")).await?;
            assert_eq!(rules(&b, staff).await?, json!(["everyone", "subscriber"]));
            Ok(())
        },
    )
    .await
    .unwrap();

    b.step("the API's deploy dialog by keyboard alone", async {
        let page = format!("{}/console/apis/pets-v1", cp.url);
        choose_by_keyboard(&b, &page, "#deploy-revision", "#deploy-partners").await?;
        // Who may see it, opened from the keyboard too.
        tab_to(&b, "[data-gateway=partners] details.visibility summary").await;
        press(&b, "\u{E007}").await;
        let open = b
            .execute(
                "return document.querySelector('[data-gateway=partners] details.visibility').open;",
                vec![],
            )
            .await?;
        assert_eq!(open, json!(true));
        tab_to(&b, "#deploy-form button[type=submit]").await;
        press(&b, "\u{E007}").await;
        b.wait_for_text(".notice", "Revision 2 deployed to partners")
            .await?;
        b.wait_for("#deployments tr[data-gateway=partners]").await?;
        Ok(())
    })
    .await
    .unwrap();
    let (_, v) = cp
        .api("GET", "/api/v1/apis/pets-v1/deployments", None)
        .await;
    assert!(v.to_string().contains("partners"), "{v}");

    b.step(
        "publish, deprecate and retire with the lifecycle buttons",
        async {
            for (button, state) in [
                ("published", "published"),
                ("deprecated", "deprecated"),
                ("retired", "retired"),
            ] {
                b.click(&format!("#lifecycle-form button[value={button}]"))
                    .await?;
                b.wait_for_text(".notice", &format!("Now {state}.")).await?;
                assert_eq!(b.text("#lifecycle").await?, state);
                let (_, v) = cp.api("GET", "/api/v1/apis/pets-v1", None).await;
                assert_eq!(v["lifecycle"], state, "{v}");
                // Published and deprecated APIs are in the portal; a retired one is not.
                let (st, _) = cp.api("GET", "/api/v1/portal/apis/pets-v1", None).await;
                assert_eq!(
                    st == 200,
                    state != "retired",
                    "{state}: portal answered {st}"
                );
            }
            Ok(())
        },
    )
    .await
    .unwrap();
    // The audit log names the publisher for each.
    let (_, v) = cp.api("GET", "/api/v1/audit?kind=api", None).await;
    let by_pat = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "user:pat" && e["action"] == "set_lifecycle")
        .count();
    assert_eq!(by_pat, 3, "{v}");

    b.step(
        "the console's other pages at phone width, labelled",
        async {
            sign_out(&b).await?;
            sign_in(&b, &cp, "console", "ada").await?;
            fit_a_phone(
                &b,
                &cp,
                &[
                    "/console/login",
                    "/portal/signup",
                    "/console/account",
                    "/console/certificates",
                    "/console/apis/new",
                    "/console/users",
                    "/console/roles",
                    "/console/audit",
                    "/console/apis/pets-v1/diff?from=1&to=2",
                    "/portal/applications",
                ],
            )
            .await
        },
    )
    .await
    .unwrap();

    b.close().await;
}

/// The text of each item matching `css`.
async fn texts(b: &Browser, css: &str) -> Result<Vec<String>, BrowserError> {
    let v = b
        .execute(
            "return [...document.querySelectorAll(arguments[0])].map(e => e.innerText.trim());",
            vec![json!(css)],
        )
        .await?;
    Ok(serde_json::from_value(v).unwrap())
}

/// The ids of the keys listed on an application's page.
async fn key_rows(b: &Browser) -> Result<Vec<String>, BrowserError> {
    let v = b
        .execute(
            "return [...document.querySelectorAll('#keys tr[data-key]')].map(r => r.dataset.key);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value(v).unwrap())
}

/// Asks the token service for a client-credentials token: its status.
async fn client_token(cp: &ControlPlane, id: &str, secret: &str) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/oauth2/token", cp.url))
        .basic_auth(id, Some(secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_pages_through_apis_applications_subscriptions_and_keys() {
    let root = TempDir::new().unwrap();
    let cp = server(root.path(), &["--portal-signup", "open"]).await;
    // 21 published APIs named Pet, and one more: more than a portal page (20) holds.
    let mut names: Vec<String> = (1..=21).map(|n| format!("Pet {n:02}")).collect();
    names.push("Cats".into());
    for name in &names {
        let context = format!("/{}", name.to_lowercase().replace(' ', "-"));
        let (st, v) = cp
            .api(
                "POST",
                "/api/v1/apis",
                Some(json!({"name": name, "version": "v1", "context": context,
                            "production_endpoints": ["http://127.0.0.1:9"]})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let id = v["id"].as_str().unwrap().to_owned();
        let (st, v) = cp
            .api(
                "POST",
                &format!("/api/v1/apis/{id}/lifecycle"),
                Some(json!({"state": "published"})),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    let b = Browser::start_named("portal-pages").await;

    b.step("open sign-up: signed in at once", async {
        sign_up(&b, &cp, "sam", "ready").await?;
        sign_in(&b, &cp, "portal", "sam").await?;
        Ok(())
    })
    .await
    .unwrap();

    b.step("a search's results, a page and a next page", async {
        b.goto(&format!("{}/portal", cp.url)).await?;
        b.fill("#q", "pet").await?;
        b.click("#search button[type=submit]").await?;
        // The results' page, not the one it replaces (which has a next page too).
        b.wait_for_url("q=pet").await?;
        b.wait_for("#next-page").await?;
        let first = texts(&b, "#apis li > a").await?;
        assert_eq!(first.len(), 20, "{first:?}");
        assert!(first.iter().all(|t| t.starts_with("Pet ")), "{first:?}");
        b.click("#next-page").await?;
        b.wait_for_text("#apis", "Pet 21").await?;
        assert_eq!(texts(&b, "#apis li > a").await?, ["Pet 21 v1"]);
        assert!(b.find("#next-page").await.is_err());
        // The search is kept from page to page.
        assert_eq!(
            b.execute("return document.querySelector('#q').value;", vec![])
                .await?,
            json!("pet")
        );
        Ok(())
    })
    .await
    .unwrap();

    b.step(
        "the subscribe chooser: a bounded list and a search",
        async {
            b.goto(&format!("{}/portal/applications", cp.url)).await?;
            b.fill("#application-name", "app-1").await?;
            b.click("#application-form button[type=submit]").await?;
            b.wait_for_text("h1", "app-1").await?;
            // 22 APIs visible: 20 offered, and a word that more match.
            assert_eq!(options(&b, "#subscribe-api").await?.len(), 20);
            b.wait_for("#more-apis").await?;
            b.fill("#find", "cat").await?;
            b.click("#api-find button[type=submit]").await?;
            // The search's page, not the one it replaces (whose chooser is still there).
            b.wait_for_url("find=cat").await?;
            b.wait_for("#subscribe-api").await?;
            assert_eq!(options(&b, "#subscribe-api").await?, ["cats-v1"]);
            assert!(b.find("#more-apis").await.is_err());
            b.click("#subscribe-form button[type=submit]").await?;
            b.wait_for_text("#subscriptions", "cats-v1").await?;
            for id in ["pet-01-v1", "pet-02-v1"] {
                b.fill("#find", id).await?;
                b.click("#api-find button[type=submit]").await?;
                b.wait_for_url(&format!("find={id}")).await?;
                b.wait_for("#subscribe-api").await?;
                assert_eq!(options(&b, "#subscribe-api").await?, [id]);
                b.click("#subscribe-form button[type=submit]").await?;
                b.wait_for_text("#subscriptions", id).await?;
            }
            b.fill("#find", "zebra").await?;
            b.click("#api-find button[type=submit]").await?;
            b.wait_for_text("#no-api", "zebra").await?;
            assert!(b.find("#subscribe-form").await.is_err());
            Ok(())
        },
    )
    .await
    .unwrap();

    b.step("subscriptions a page at a time", async {
        b.goto(&format!("{}/portal/applications/app-1?limit=2", cp.url))
            .await?;
        assert_eq!(
            texts(&b, "#subscriptions li").await?,
            ["cats-v1", "pet-01-v1"]
        );
        b.click("#subscriptions-next").await?;
        b.wait_for_text("#subscriptions", "pet-02-v1").await?;
        assert_eq!(texts(&b, "#subscriptions li").await?, ["pet-02-v1"]);
        assert!(b.find("#subscriptions-next").await.is_err());
        b.screenshot("application").await?;
        Ok(())
    })
    .await
    .unwrap();

    let (client_id, secret) = b
        .step("client credentials, shown once", async {
            b.goto(&format!("{}/portal/applications/app-1", cp.url))
                .await?;
            choose(&b, "#key-kind", "client").await?;
            b.click("#key-form button[type=submit]").await?;
            let id = b.wait_for("#client-id").await?.text().await.unwrap();
            let secret = b.text("#secret-value").await?;
            assert!(!id.is_empty() && !secret.is_empty());
            b.goto(&format!("{}/portal/applications/app-1", cp.url))
                .await?;
            b.wait_for(&format!("#keys tr[data-key='{id}']")).await?;
            assert!(b.find("#secret-value").await.is_err());
            assert!(!b.page_source().await?.contains(&secret));
            Ok((id, secret))
        })
        .await
        .unwrap();
    // The token service trades them for an access token.
    assert_eq!(client_token(&cp, &client_id, &secret).await, 200);

    b.step("keys a page at a time, one revoked", async {
        // Each new key's page lists one more: wait for it, not for the secret
        // field the page before already showed.
        for want in [2, 3] {
            b.click("#key-form button[type=submit]").await?;
            b.wait_until(&format!(
                "document.querySelector('#secret-value') && \
                 document.querySelectorAll('#keys tr[data-key]').length === {want}"
            ))
            .await?;
        }
        b.goto(&format!("{}/portal/applications/app-1?limit=2", cp.url))
            .await?;
        let mut seen = key_rows(&b).await?;
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0], client_id, "oldest first");
        // The subscriptions' cursor stays where it was when the keys page on.
        b.click("#subscriptions-next").await?;
        b.wait_for_text("#subscriptions", "pet-02-v1").await?;
        let next = b
            .execute(
                "return document.querySelector('#keys-next').getAttribute('href');",
                vec![],
            )
            .await?;
        b.click("#keys-next").await?;
        b.wait_for_url(next.as_str().unwrap_or("keys=")).await?;
        b.wait_for("#keys").await?;
        assert_eq!(texts(&b, "#subscriptions li").await?, ["pet-02-v1"]);
        seen.extend(key_rows(&b).await?);
        assert!(b.find("#keys-next").await.is_err());
        assert_eq!(seen.len(), 3, "{seen:?}");
        b.goto(&format!("{}/portal/applications/app-1", cp.url))
            .await?;
        let row = format!("#keys tr[data-key='{client_id}']");
        b.click(&format!("{row} button.revoke")).await?;
        b.wait_for_text(".notice", &format!("Revoked {client_id}."))
            .await?;
        b.wait_for_text(&row, "revoked").await?;
        Ok(())
    })
    .await
    .unwrap();
    assert_ne!(client_token(&cp, &client_id, &secret).await, 200);

    b.step("the applications list a page at a time", async {
        for name in ["app-2", "app-3"] {
            b.goto(&format!("{}/portal/applications", cp.url)).await?;
            b.fill("#application-name", name).await?;
            b.click("#application-form button[type=submit]").await?;
            b.wait_for_text("h1", name).await?;
        }
        b.goto(&format!("{}/portal/applications?limit=2", cp.url))
            .await?;
        assert_eq!(texts(&b, "#applications li").await?, ["app-1", "app-2"]);
        b.click("#next-page").await?;
        b.wait_for_text("#applications", "app-3").await?;
        assert_eq!(texts(&b, "#applications li").await?, ["app-3"]);
        assert!(b.find("#next-page").await.is_err());
        Ok(())
    })
    .await
    .unwrap();

    b.step("the application pages at phone width", async {
        fit_a_phone(
            &b,
            &cp,
            &["/portal/applications", "/portal/applications/app-1"],
        )
        .await
    })
    .await
    .unwrap();

    b.close().await;
}
