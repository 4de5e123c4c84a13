//! Contacts and groups against a real database: CSV import (bad rows, re-import, all or
//! nothing), the library API, group counts, and the `herald contacts` / `herald groups` commands.

use std::process::Command;

use herald::{
    contacts::{self, ContactFilter, ContactKey, ContactUpdate, GroupName, NewContact, import},
    domain::PhoneNumber,
};
use serde_json::{Value, json};

use super::harness::{Options, TestApp, spawn_app};

fn phone(p: &str) -> PhoneNumber {
    PhoneNumber::parse(p).unwrap()
}

fn group(g: &str) -> GroupName {
    GroupName::parse(g).unwrap()
}

fn herald(app: &TestApp) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_herald"));
    c.env("HERALD_DATABASE_URL", &app.vars["HERALD_DATABASE_URL"]);
    c
}

const FILE: &str = "phone,name,groups,opted_out,plan\n\
+4915100000001,Ana Souza,vip;berlin,false,pro\n\
+4915100000002,Bruno,,,\n\
015100000003,No Plus,,,\n\
+4915100000004,Caio,,perhaps,\n\
+4915100000005,Dora,vip\n\
+4915100000001,Ana Twice,,,\n\
+4915100000006,Eva,,yes,basic\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reports_bad_rows_by_line_and_writes_the_good_ones() {
    let app = spawn_app(Options::default()).await;
    let spring = group("spring-2026");
    let report = import::import_csv(&app.pool, FILE.as_bytes(), Some(&spring))
        .await
        .unwrap();
    assert_eq!((report.imported, report.updated), (3, 0));
    let skipped: Vec<(u64, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.line, s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 4, "{skipped:?}");
    assert_eq!(skipped[0].0, 4);
    assert!(skipped[0].1.contains("Invalid phone number '015100000003'"));
    assert_eq!(skipped[1].0, 5);
    assert!(skipped[1].1.contains("opted_out is 'perhaps'"));
    assert_eq!(skipped[2], (6, "has 3 columns, the header has 5"));
    assert_eq!(skipped[3], (7, "+4915100000001 is a duplicate of line 2"));

    let ana = contacts::get_by_phone(&app.pool, &phone("+4915100000001"))
        .await
        .unwrap();
    assert_eq!(ana.name.as_deref(), Some("Ana Souza"));
    assert_eq!(ana.customer_id, "4915100000001");
    assert_eq!(ana.groups, ["vip", "berlin", "spring-2026"]);
    assert_eq!(ana.fields, json!({"plan": "pro"}));
    assert!(!ana.opted_out);
    let eva = contacts::get_by_phone(&app.pool, &phone("+4915100000006"))
        .await
        .unwrap();
    assert!(eva.opted_out);
    assert_eq!(
        app.count("SELECT count(*) FROM contacts").await,
        3,
        "only the good rows"
    );
    let groups = contacts::list_groups(&app.pool).await.unwrap();
    let counts: Vec<(&str, i64, i64)> = groups
        .iter()
        .map(|g| (g.name.as_str(), g.members, g.opted_out))
        .collect();
    assert_eq!(
        counts,
        [("berlin", 1, 0), ("spring-2026", 3, 1), ("vip", 1, 0)]
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_import_updates_the_contacts_it_knows_and_merges_their_fields_and_groups() {
    let app = spawn_app(Options::default()).await;
    import::import_csv(&app.pool, FILE.as_bytes(), None)
        .await
        .unwrap();
    let again = "phone,name,groups,opted_out,city\n\
                 +4915100000001,,newsletter,true,Berlin\n\
                 +4915100000002,Bruno Lima,,,\n\
                 +4915100000007,Gil,,,\n";
    let report = import::import_csv(&app.pool, again.as_bytes(), Some(&group("vip")))
        .await
        .unwrap();
    assert_eq!(
        (report.imported, report.updated, report.skipped.len()),
        (1, 2, 0)
    );
    let ana = contacts::get_by_phone(&app.pool, &phone("+4915100000001"))
        .await
        .unwrap();
    assert_eq!(
        ana.name.as_deref(),
        Some("Ana Souza"),
        "an empty cell changes nothing"
    );
    assert_eq!(ana.groups, ["vip", "berlin", "newsletter"]);
    assert_eq!(ana.fields, json!({"plan": "pro", "city": "Berlin"}));
    assert!(ana.opted_out);
    let bruno = contacts::get_by_phone(&app.pool, &phone("+4915100000002"))
        .await
        .unwrap();
    assert_eq!(bruno.name.as_deref(), Some("Bruno Lima"));
    assert_eq!(bruno.groups, ["vip"]);
    assert_eq!(app.count("SELECT count(*) FROM contacts").await, 4);
    let vip = contacts::members(&app.pool, &group("vip")).await.unwrap();
    let phones: Vec<&str> = vip.iter().filter_map(|c| c.phone.as_deref()).collect();
    assert_eq!(
        phones,
        ["+4915100000001", "+4915100000002", "+4915100000007"]
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_database_fails_mid_import_nothing_is_written() {
    let app = spawn_app(Options::default()).await;
    // 2,500 good rows (three statements); the database refuses the 2,400th.
    let mut file = String::from("phone,name\n");
    for i in 0..2500 {
        file.push_str(&format!("+49151{:08},Person {i}\n", i));
    }
    sqlx::query(
        "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
           IF NEW.customer_id = '4915100002399' THEN RAISE EXCEPTION 'disk full (simulated)'; END IF;
           RETURN NEW;
         END $$",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_one BEFORE INSERT ON contacts FOR EACH ROW EXECUTE FUNCTION refuse_one()",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let err = import::import_csv(&app.pool, file.as_bytes(), Some(&group("bulk")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable");
    assert!(err.to_string().contains("disk full"), "{err}");
    assert_eq!(app.count("SELECT count(*) FROM contacts").await, 0);
    assert_eq!(app.count("SELECT count(*) FROM groups").await, 0);
    sqlx::query("DROP TRIGGER refuse_one ON contacts")
        .execute(&app.pool)
        .await
        .unwrap();
    let report = import::import_csv(&app.pool, file.as_bytes(), Some(&group("bulk")))
        .await
        .unwrap();
    assert_eq!(report.imported, 2500);
    assert_eq!(
        contacts::get_group(&app.pool, &group("bulk"))
            .await
            .unwrap()
            .members,
        2500
    );
    app.cleanup().await;
}

/// What `herald contacts import` draws its progress bar from: the rows written so far out of the
/// good ones, once parsed and after each chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_reports_its_progress_after_each_chunk_of_rows() {
    let app = spawn_app(Options::default()).await;
    let mut file = String::from("phone,name\n015100000000,Bad Row\n");
    for i in 0..2500 {
        file.push_str(&format!("+49151{:08},Person {i}\n", i));
    }
    let mut seen = Vec::new();
    let report = import::import_csv_with_progress(&app.pool, file.as_bytes(), None, |done, all| {
        seen.push((done, all))
    })
    .await
    .unwrap();
    assert_eq!((report.imported, report.skipped.len()), (2500, 1));
    assert_eq!(seen, [(0, 2500), (1000, 2500), (2000, 2500), (2500, 2500)]);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_without_a_phone_column_imports_nothing_and_says_so() {
    let app = spawn_app(Options::default()).await;
    let err = import::import_csv(&app.pool, b"name,mobile\nAna,+4915100000001\n", None)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_csv");
    assert!(err.to_string().contains("no 'phone' column"), "{err}");
    assert_eq!(app.count("SELECT count(*) FROM contacts").await, 0);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_creates_finds_lists_updates_and_deletes_contacts() {
    let app = spawn_app(Options::default()).await;
    let mut ana = NewContact::new(phone("+4915100000011"));
    ana.name = Some("Ana".into());
    ana.groups = vec![group("vip")];
    let created = contacts::create(&app.pool, &ana).await.unwrap();
    assert_eq!(created.groups, ["vip"]);
    let conflict = contacts::create(&app.pool, &ana).await.unwrap_err();
    assert_eq!(conflict.code(), "conflict");
    let upserted = contacts::upsert(&app.pool, &NewContact::new(phone("+4915100000012")))
        .await
        .unwrap();
    assert!(upserted.created);
    let mut bruno = NewContact::new(phone("+4915100000012"));
    bruno.name = Some("Bruno".into());
    bruno.fields.insert("plan".into(), json!("pro"));
    let merged = contacts::upsert(&app.pool, &bruno).await.unwrap();
    assert!(!merged.created);
    assert_eq!(merged.contact.name.as_deref(), Some("Bruno"));

    let by_id = contacts::get_by_id(&app.pool, created.id).await.unwrap();
    assert_eq!(by_id.phone.as_deref(), Some("+4915100000011"));
    let by_customer = contacts::get(&app.pool, &ContactKey::parse("4915100000012").unwrap())
        .await
        .unwrap();
    assert_eq!(by_customer.name.as_deref(), Some("Bruno"));
    let missing = contacts::get_by_phone(&app.pool, &phone("+4915100000019"))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), "not_found");
    assert!(missing.to_string().contains("+4915100000019"));

    let key = ContactKey::Phone(phone("+4915100000012"));
    let updated = contacts::update(
        &app.pool,
        &key,
        &ContactUpdate {
            fields: serde_json::from_value(json!({"plan": null, "city": "Porto"})).unwrap(),
            add_groups: vec![group("vip"), group("porto")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(updated.fields, json!({"city": "Porto"}));
    assert_eq!(updated.groups, ["vip", "porto"]);
    let removed = contacts::update(
        &app.pool,
        &key,
        &ContactUpdate {
            remove_groups: vec![group("vip")],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(removed.groups, ["porto"]);
    contacts::set_opted_out(&app.pool, &key, true)
        .await
        .unwrap();

    let list = |filter: ContactFilter| {
        let pool = app.pool.clone();
        async move {
            contacts::list(&pool, &filter)
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.customer_id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        list(ContactFilter::default()).await,
        ["4915100000011", "4915100000012"]
    );
    let vip = ContactFilter {
        group: Some(group("vip")),
        ..Default::default()
    };
    assert_eq!(list(vip).await, ["4915100000011"]);
    let out = ContactFilter {
        opted_out: Some(true),
        ..Default::default()
    };
    assert_eq!(list(out).await, ["4915100000012"]);
    let search = ContactFilter {
        search: Some("bru".into()),
        ..Default::default()
    };
    assert_eq!(list(search).await, ["4915100000012"]);
    let page = ContactFilter {
        limit: Some(1),
        offset: Some(1),
        ..Default::default()
    };
    assert_eq!(list(page).await, ["4915100000012"]);
    let bad = contacts::list(
        &app.pool,
        &ContactFilter {
            limit: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(bad.code(), "invalid_input");

    contacts::delete(&app.pool, &key).await.unwrap();
    assert_eq!(
        contacts::delete(&app.pool, &key).await.unwrap_err().code(),
        "not_found"
    );
    assert_eq!(
        contacts::update(&app.pool, &key, &ContactUpdate::default())
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_count_members_and_deleting_one_takes_it_off_its_contacts() {
    let app = spawn_app(Options::default()).await;
    let vip = group("vip");
    let empty = contacts::create_group(&app.pool, &group("later"), Some("Not yet used"))
        .await
        .unwrap();
    assert_eq!(
        (empty.members, empty.description.as_deref()),
        (0, Some("Not yet used"))
    );
    assert_eq!(
        contacts::create_group(&app.pool, &group("later"), None)
            .await
            .unwrap_err()
            .code(),
        "conflict"
    );
    let phones = [
        phone("+4915100000021"),
        phone("+4915100000022"),
        phone("+4915100000023"),
    ];
    contacts::upsert(&app.pool, &NewContact::new(phones[0].clone()))
        .await
        .unwrap();
    // One contact exists, two are new; a phone given twice counts once.
    let added = contacts::add_members(
        &app.pool,
        &vip,
        &[phones.to_vec(), vec![phones[0].clone()]].concat(),
    )
    .await
    .unwrap();
    assert_eq!(added, 3);
    assert_eq!(
        contacts::add_members(&app.pool, &vip, &phones[..1])
            .await
            .unwrap(),
        0
    );
    contacts::set_opted_out(&app.pool, &ContactKey::Phone(phones[2].clone()), true)
        .await
        .unwrap();
    let members = contacts::members(&app.pool, &vip).await.unwrap();
    assert_eq!(members.len(), 3, "opted-out members included");
    let g = contacts::get_group(&app.pool, &vip).await.unwrap();
    assert_eq!((g.members, g.opted_out), (3, 1));
    assert_eq!(
        contacts::remove_members(&app.pool, &vip, &phones[1..2])
            .await
            .unwrap(),
        1
    );
    assert_eq!(contacts::members(&app.pool, &vip).await.unwrap().len(), 2);
    // A group written by the update_contact step's SQL (no group row) exists all the same.
    sqlx::query("UPDATE contacts SET groups = groups || '{from-a-step}' WHERE customer_id = '4915100000022'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        contacts::get_group(&app.pool, &group("from-a-step"))
            .await
            .unwrap()
            .members,
        1
    );
    assert_eq!(contacts::delete_group(&app.pool, &vip).await.unwrap(), 2);
    assert_eq!(
        app.count("SELECT count(*) FROM contacts WHERE 'vip' = ANY(groups)")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM contacts").await, 3);
    for err in [
        contacts::members(&app.pool, &vip).await.unwrap_err(),
        contacts::delete_group(&app.pool, &vip).await.unwrap_err(),
        contacts::remove_members(&app.pool, &vip, &phones)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err.code(), "not_found");
        assert!(err.to_string().contains("'vip'"), "{err}");
    }
    let names: Vec<String> = contacts::list_groups(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.name)
        .collect();
    assert_eq!(names, ["from-a-step", "later"]);
    app.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contacts_and_groups_commands_import_list_show_and_opt_out_against_a_database() {
    let app = spawn_app(Options::default()).await;
    let file = app.workflows_dir.join("contacts.csv");
    std::fs::write(&file, FILE).unwrap();
    let out = herald(&app)
        .args(["contacts", "import"])
        .arg(&file)
        .args(["--group", "spring"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("imported 3, updated 0, skipped 4"), "{text}");
    assert!(
        text.contains("line 4: Invalid phone number '015100000003'"),
        "{text}"
    );
    assert!(
        text.contains("line 7: +4915100000001 is a duplicate of line 2"),
        "{text}"
    );

    let out = herald(&app)
        .args(["contacts", "import"])
        .arg(&file)
        .arg("--json")
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).expect("import --json");
    assert_eq!(report["imported"], 0);
    assert_eq!(report["updated"], 3);
    assert_eq!(report["skipped"][0]["line"], 4);

    let out = herald(&app)
        .args(["contacts", "list", "--group", "vip", "--json"])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&out.stdout).expect("list --json");
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["phone"], "+4915100000001");
    assert_eq!(list[0]["fields"]["plan"], "pro");

    let out = herald(&app)
        .args(["contacts", "add", "+4915100000031", "--name", "Gil"])
        .args(["--group", "vip", "--field", "plan=trial"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created +4915100000031"));
    let out = herald(&app)
        .args(["contacts", "opt-out", "+4915100000031"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("opted out"));
    let out = herald(&app)
        .args(["contacts", "show", "+4915100000031", "--json"])
        .output()
        .unwrap();
    let gil: Value = serde_json::from_slice(&out.stdout).expect("show --json");
    assert_eq!(gil["name"], "Gil");
    assert_eq!(gil["opted_out"], true);
    assert_eq!(gil["groups"], json!(["vip"]));
    assert_eq!(gil["fields"], json!({"plan": "trial"}));

    let out = herald(&app)
        .args(["groups", "list", "--json"])
        .output()
        .unwrap();
    let groups: Value = serde_json::from_slice(&out.stdout).expect("groups list --json");
    let counts: Vec<(String, i64, i64)> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_string(),
                g["members"].as_i64().unwrap(),
                g["opted_out"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("berlin".to_string(), 1, 0),
            ("spring".to_string(), 3, 1),
            ("vip".to_string(), 2, 1)
        ]
    );
    let table = herald(&app).args(["groups", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&table.stdout).contains("spring"));

    // Mistakes: a clear message and a failing exit code.
    for (args, message) in [
        (
            vec!["contacts", "show", "+4915100000099"],
            "No contact +4915100000099",
        ),
        (
            vec!["contacts", "show", "4915-1"],
            "+[country code][number]",
        ),
        (
            vec!["contacts", "add", "+49 151"],
            "+[country code][number]",
        ),
        (
            vec!["contacts", "list", "--group", "no way"],
            "Invalid group name",
        ),
        (
            vec!["contacts", "import", "/nonexistent.csv"],
            "read /nonexistent.csv",
        ),
    ] {
        let out = herald(&app).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    let no_phone = app.workflows_dir.join("no-phone.csv");
    std::fs::write(&no_phone, "name\nAna\n").unwrap();
    let out = herald(&app)
        .args(["contacts", "import"])
        .arg(&no_phone)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no 'phone' column"));
    app.cleanup().await;
}
