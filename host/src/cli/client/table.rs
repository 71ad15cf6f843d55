//! The CLI's tables (`tasks`, executions): plain aligned columns, built by
//! `comfy-table` rather than padded by hand, so that a long cell widens its
//! column instead of pushing every later cell out of line.

use comfy_table::{CellAlignment, ContentArrangement, Table};

/// Spaces between two columns.
const GAP: u16 = 2;

/// A table under `header`: no borders, never wrapped (a script cutting
/// columns gets each row on one line, whatever the terminal's width), its
/// rows starting `indent` spaces in, columns `GAP` spaces apart. The
/// columns at `right` (indices) are aligned right, numbers under their
/// header's last letter.
pub(super) fn plain(header: &[&str], indent: u16, right: &[usize]) -> Table {
    let mut table = Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for (i, column) in table.column_iter_mut().enumerate() {
        let left = if i == 0 { indent } else { 0 };
        column.set_padding((left, GAP));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// The table's lines, without the spaces its last column leaves at their
/// ends.
pub(super) fn lines(table: &Table) -> Vec<String> {
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_numbers_align_right() {
        let mut table = plain(&["NAME", "COUNT", "LAST"], 2, &[1]);
        table.add_row(vec!["a_long_name", "7", "done"]);
        table.add_row(vec!["b", "1234567", ""]);
        assert_eq!(
            lines(&table),
            [
                "  NAME           COUNT  LAST",
                "  a_long_name        7  done",
                "  b            1234567",
            ]
        );
    }
}
