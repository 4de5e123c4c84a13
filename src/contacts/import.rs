//! CSV import: parse every row at the edge (bad rows are reported by line and skipped), then
//! create or merge the good ones in one transaction: all of them or, on a database error, none.
//!
//! Columns: `phone` (required, E.164), `name`, `groups` (`;`-separated), `opted_out`
//! (true/false); any other column is a custom field. Empty cells change nothing.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{Map, Value};
use sqlx::PgPool;

use super::{ContactsError, GroupName, NewContact};
use crate::domain::PhoneNumber;
use crate::store::contacts::upsert_many;

/// Rows written per statement (all in one transaction).
const CHUNK: usize = 1000;

/// A good row: its line in the file and the contact it describes.
#[derive(Clone, Debug, PartialEq)]
pub struct ImportRow {
    pub line: u64,
    pub contact: NewContact,
}

/// A row that was not imported, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SkippedRow {
    pub line: u64,
    pub reason: String,
}

/// A parsed file: the rows to import and the rows skipped, both in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedCsv {
    pub rows: Vec<ImportRow>,
    pub skipped: Vec<SkippedRow>,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ImportReport {
    /// New contacts.
    pub imported: usize,
    /// Existing contacts merged with their row.
    pub updated: usize,
    pub skipped: Vec<SkippedRow>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Column {
    Phone,
    Name,
    Groups,
    OptedOut,
    Field(String),
}

fn columns(header: &csv::StringRecord) -> Result<Vec<Column>, ContactsError> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::with_capacity(header.len());
    for (i, raw) in header.iter().enumerate() {
        let name = raw.trim_start_matches('\u{feff}').trim();
        if name.is_empty() {
            return Err(ContactsError::InvalidCsv(format!(
                "Line 1: column {} of the header has no name",
                i + 1
            )));
        }
        let key = name.to_lowercase();
        if let Some(first) = seen.insert(key.clone(), i) {
            return Err(ContactsError::InvalidCsv(format!(
                "Line 1: the column '{name}' appears twice (columns {} and {})",
                first + 1,
                i + 1
            )));
        }
        out.push(match key.as_str() {
            "phone" => Column::Phone,
            "name" => Column::Name,
            "groups" => Column::Groups,
            "opted_out" => Column::OptedOut,
            _ => Column::Field(name.to_string()),
        });
    }
    if !out.contains(&Column::Phone) {
        let names: Vec<&str> = header.iter().map(str::trim).collect();
        return Err(ContactsError::InvalidCsv(format!(
            "The header has no 'phone' column (it has: {}); nothing was imported",
            names.join(", ")
        )));
    }
    Ok(out)
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Some(true),
        "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Spreadsheets write numbers with spaces, dashes, dots or brackets: those go, the `+` stays
/// required.
fn parse_phone(raw: &str) -> Result<PhoneNumber, crate::domain::InvalidPhoneNumber> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    PhoneNumber::parse(&compact).map_err(|_| crate::domain::InvalidPhoneNumber {
        input: raw.to_string(),
    })
}

fn parse_row(
    columns: &[Column],
    record: &csv::StringRecord,
    group: Option<&GroupName>,
) -> Result<NewContact, String> {
    if record.len() != columns.len() {
        return Err(format!(
            "has {} columns, the header has {}",
            record.len(),
            columns.len()
        ));
    }
    let mut phone = None;
    let mut name = None;
    let mut groups: Vec<GroupName> = Vec::new();
    let mut opted_out = None;
    let mut fields = Map::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        let cell = cell.trim();
        match column {
            Column::Phone => {
                if cell.is_empty() {
                    return Err("the phone is empty".into());
                }
                phone = Some(parse_phone(cell).map_err(|e| e.to_string())?);
            }
            Column::Name if !cell.is_empty() => name = Some(cell.to_string()),
            Column::Groups => {
                for g in cell.split(';').map(str::trim).filter(|g| !g.is_empty()) {
                    groups.push(GroupName::parse(g).map_err(|e| e.to_string())?);
                }
            }
            Column::OptedOut if !cell.is_empty() => {
                opted_out = Some(parse_bool(cell).ok_or_else(|| {
                    format!("opted_out is '{cell}': use true or false (or yes/no, 1/0)")
                })?);
            }
            Column::Field(key) if !cell.is_empty() => {
                fields.insert(key.clone(), Value::String(cell.to_string()));
            }
            _ => {}
        }
    }
    if let Some(g) = group {
        groups.push(g.clone());
    }
    Ok(NewContact {
        phone: phone.ok_or("the phone is empty")?,
        name,
        fields,
        groups,
        opted_out,
    })
}

/// The line a record starts on. The reader's position of a record that follows blank lines is
/// the first blank line's: step over them.
fn line_of(bytes: &[u8], position: Option<&csv::Position>) -> u64 {
    let Some(position) = position else {
        return 0;
    };
    let start = usize::try_from(position.byte()).unwrap_or(usize::MAX);
    let blank = bytes
        .get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .filter(|b| **b == b'\n')
        .count();
    position.line() + blank as u64
}

/// Parses a CSV file (UTF-8, comma-separated, header row first). Every contact also joins
/// `group` when given. A file without a header or a phone column is an error; a bad row is
/// skipped with its line and reason; a phone's second row is skipped as a duplicate.
pub fn parse_csv(bytes: &[u8], group: Option<&GroupName>) -> Result<ParsedCsv, ContactsError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(true)
        .from_reader(bytes);
    let header = reader
        .headers()
        .map_err(|e| ContactsError::InvalidCsv(format!("Line 1: the header is unreadable: {e}")))?
        .clone();
    if header.iter().all(|h| h.trim().is_empty()) {
        return Err(ContactsError::InvalidCsv(
            "The file is empty: a header row with a 'phone' column is required".into(),
        ));
    }
    let columns = columns(&header)?;
    let mut parsed = ParsedCsv::default();
    let mut lines_of: HashMap<String, u64> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => line_of(bytes, record.position()),
            Err(e) => {
                let line = line_of(bytes, e.position());
                let reason = match e.kind() {
                    csv::ErrorKind::Utf8 { .. } => "is not valid UTF-8".to_string(),
                    _ => format!("is unreadable: {e}"),
                };
                parsed.skipped.push(SkippedRow { line, reason });
                if matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    continue;
                }
                break;
            }
        };
        match parse_row(&columns, &record, group) {
            Ok(contact) => {
                if let Some(first) = lines_of.get(contact.phone.as_str()) {
                    parsed.skipped.push(SkippedRow {
                        line,
                        reason: format!("{} is a duplicate of line {first}", contact.phone),
                    });
                    continue;
                }
                lines_of.insert(contact.phone.as_str().to_string(), line);
                parsed.rows.push(ImportRow { line, contact });
            }
            Err(reason) => parsed.skipped.push(SkippedRow { line, reason }),
        }
    }
    Ok(parsed)
}

/// Parses `bytes` (see [`parse_csv`]) and writes the good rows in one transaction.
pub async fn import_csv(
    pool: &PgPool,
    bytes: &[u8],
    group: Option<&GroupName>,
) -> Result<ImportReport, ContactsError> {
    import_csv_with_progress(pool, bytes, group, |_, _| {}).await
}

/// [`import_csv`], telling `progress` how many of the good rows are written and how many there
/// are: once parsed, then after each chunk.
pub async fn import_csv_with_progress(
    pool: &PgPool,
    bytes: &[u8],
    group: Option<&GroupName>,
    mut progress: impl FnMut(usize, usize),
) -> Result<ImportReport, ContactsError> {
    let parsed = parse_csv(bytes, group)?;
    let contacts: Vec<NewContact> = parsed.rows.into_iter().map(|r| r.contact).collect();
    let mut report = ImportReport {
        skipped: parsed.skipped,
        ..ImportReport::default()
    };
    progress(0, contacts.len());
    let mut tx = pool.begin().await?;
    for chunk in contacts.chunks(CHUNK) {
        let created = upsert_many(&mut tx, chunk).await?;
        let new = created.iter().filter(|c| **c).count();
        report.imported += new;
        report.updated += created.len() - new;
        progress(report.imported + report.updated, contacts.len());
    }
    tx.commit().await?;
    // debug: the CLI's logs go to stdout, where `contacts import --json` prints its report.
    tracing::debug!(
        imported = report.imported,
        updated = report.updated,
        skipped = report.skipped.len(),
        "contacts imported"
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> ParsedCsv {
        parse_csv(text.as_bytes(), None).unwrap()
    }

    #[test]
    fn rows_become_contacts_with_groups_fields_and_opt_out() {
        let vip = GroupName::parse("spring").unwrap();
        let p = parse_csv(
            "\u{feff}Phone,Name,groups,opted_out,plan,city\n\
             +4915112345678,Ana Souza,vip; berlin ,true,pro,\n\
             +49 (151) 1234-5679,,,,,Berlin\n"
                .as_bytes(),
            Some(&vip),
        )
        .unwrap();
        assert_eq!(p.skipped, []);
        assert_eq!(p.rows.len(), 2);
        let ana = &p.rows[0];
        assert_eq!(ana.line, 2);
        assert_eq!(ana.contact.phone.as_str(), "+4915112345678");
        assert_eq!(ana.contact.name.as_deref(), Some("Ana Souza"));
        assert_eq!(
            ana.contact
                .groups
                .iter()
                .map(GroupName::as_str)
                .collect::<Vec<_>>(),
            ["vip", "berlin", "spring"]
        );
        assert_eq!(ana.contact.opted_out, Some(true));
        assert_eq!(
            ana.contact.fields,
            serde_json::json!({"plan": "pro"})
                .as_object()
                .unwrap()
                .clone()
        );
        let other = &p.rows[1];
        assert_eq!(other.line, 3);
        assert_eq!(other.contact.phone.as_str(), "+4915112345679");
        assert_eq!(other.contact.name, None);
        assert_eq!(other.contact.opted_out, None);
        assert_eq!(other.contact.fields["city"], "Berlin");
    }

    #[test]
    fn bad_rows_are_skipped_with_their_line_and_reason() {
        let p = parse(
            "phone,name,opted_out,groups\n\
             +4915100000001,Ana,false,\n\
             015100000002,Bruno,,\n\
             +4915100000003,Caio\n\
             +4915100000004,Dora,maybe,\n\
             +4915100000001,Ana again,,\n\
             \n\
             +4915100000005,Eva,,bad group\r\n\
             ,Nobody,,\n\
             \"+4915100000006\",\"Multi\nLine\",,\n\
             +4915100000007,Gil,1,\n",
        );
        let good: Vec<(u64, &str)> = p
            .rows
            .iter()
            .map(|r| (r.line, r.contact.phone.as_str()))
            .collect();
        assert_eq!(
            good,
            [
                (2, "+4915100000001"),
                (10, "+4915100000006"),
                (12, "+4915100000007")
            ]
        );
        let lines: Vec<u64> = p.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 8, 9]);
        let reason = |line: u64| &p.skipped.iter().find(|s| s.line == line).unwrap().reason;
        assert!(reason(3).contains("Invalid phone number '015100000002'"));
        assert!(reason(3).contains("+[country code][number]"));
        assert_eq!(reason(4), "has 2 columns, the header has 4");
        assert!(reason(5).contains("opted_out is 'maybe'"));
        assert_eq!(reason(6), "+4915100000001 is a duplicate of line 2");
        assert!(reason(8).contains("Invalid group name 'bad group'"));
        assert_eq!(reason(9), "the phone is empty");
        assert_eq!(p.rows[1].contact.name.as_deref(), Some("Multi\nLine"));
    }

    #[test]
    fn a_file_without_a_phone_column_is_refused_whole() {
        let err = parse_csv(b"name,mobile\nAna,+4915112345678\n", None).unwrap_err();
        assert_eq!(err.code(), "invalid_csv");
        assert!(err.to_string().contains("no 'phone' column"), "{err}");
        assert!(err.to_string().contains("name, mobile"), "{err}");
        let empty = parse_csv(b"", None).unwrap_err();
        assert!(empty.to_string().contains("empty"), "{empty}");
        let twice = parse_csv(b"phone,Phone\n", None).unwrap_err();
        assert!(twice.to_string().contains("appears twice"), "{twice}");
        let unnamed = parse_csv(b"phone,,name\n", None).unwrap_err();
        assert!(unnamed.to_string().contains("column 2"), "{unnamed}");
    }

    #[test]
    fn a_row_that_is_not_utf8_is_skipped_and_the_rest_read() {
        let mut bytes = b"phone,name\n+4915100000001,Ana\n+4915100000002,".to_vec();
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b"\n+4915100000003,Caio\n");
        let p = parse_csv(&bytes, None).unwrap();
        assert_eq!(p.rows.len(), 2);
        assert_eq!(
            p.skipped,
            [SkippedRow {
                line: 3,
                reason: "is not valid UTF-8".into()
            }]
        );
    }

    #[test]
    fn a_header_only_file_imports_nothing() {
        assert_eq!(parse("phone,name\n"), ParsedCsv::default());
    }
}
