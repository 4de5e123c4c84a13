//! How the commands print: one JSON document on stdout with `--json`, otherwise text and
//! tables; progress bars only on stderr, only when it is a terminal and the output is not JSON.

use std::io::IsTerminal;

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Prints `value` as pretty JSON.
pub(super) fn json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table without borders: a header row, then one line per row, columns two spaces apart.
/// Rows are never wrapped, whatever the terminal's width, so that `grep` and `awk` see one
/// line per row.
pub(super) fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header);
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
}

/// Aligns the given columns (counted from 0) to the right, for numbers.
pub(super) fn align_right(table: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(column) = table.column_mut(i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// Prints a table made by [`table`], without the padding at the end of its lines.
pub(super) fn print_table(table: &Table) {
    println!("{}", table.trim_fmt());
}

/// Whether progress bars are drawn: on a terminal, and never around JSON output.
pub(super) fn draws_progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// A bar of `len` steps on stderr, followed by `what` and a message; hidden unless
/// [`draws_progress`].
pub(super) fn progress_bar(len: u64, what: &str, json: bool) -> ProgressBar {
    if !draws_progress(json) {
        return ProgressBar::hidden();
    }
    let template = format!("{{bar:30}} {{pos}}/{{len}} {what} {{msg}}");
    let style =
        ProgressStyle::with_template(&template).unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len).with_style(style)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_a_header_aligned_columns_and_no_trailing_blanks() {
        let mut t = table(["GROUP", "MEMBERS", "DESCRIPTION"]);
        t.add_row(["spring", "3", "Spring campaign"]);
        t.add_row(["a-much-longer-name", "12", ""]);
        align_right(&mut t, &[1]);
        assert_eq!(
            t.trim_fmt().lines().collect::<Vec<_>>(),
            [
                "GROUP               MEMBERS  DESCRIPTION",
                "spring                    3  Spring campaign",
                "a-much-longer-name       12",
            ]
        );
    }

    #[test]
    fn no_progress_bar_is_drawn_around_json() {
        assert!(!draws_progress(true));
        assert!(progress_bar(10, "contacts", true).is_hidden());
    }
}
