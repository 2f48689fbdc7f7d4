//! Plain-text layout for a terminal: wrapping and columns side by side (`aha traces follow`).
//!
//! Widths count `char`s, and ANSI colour sequences (`ESC [ ... m`) count nothing, so a caller may
//! colour whole lines. Characters that take two cells (CJK) or none (combining marks) are not
//! measured as such: a column of them may end a little off.

/// `text` in lines of at most `width` characters, broken at spaces where it can be and inside a
/// word longer than a line where it must. Its own line breaks are kept (an empty line stays); a
/// tab becomes four spaces and any other control character U+FFFD, so that a completion cannot
/// move the cursor or recolour the terminal.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    for paragraph in text.split('\n') {
        let clean: String = paragraph
            .trim_end_matches('\r')
            .chars()
            .flat_map(|c| match c {
                '\t' => vec![' '; 4],
                c if c.is_control() => vec!['\u{FFFD}'],
                c => vec![c],
            })
            .collect();
        // `started`: the line holds a word (perhaps an empty one: a run of spaces is kept).
        let (mut line, mut line_width, mut started) = (String::new(), 0, false);
        for word in clean.split(' ') {
            let word_width = word.chars().count();
            let needed = if started { line_width + 1 + word_width } else { word_width };
            if needed <= width {
                if started {
                    line.push(' ');
                }
                line.push_str(word);
                (line_width, started) = (needed, true);
                continue;
            }
            if started {
                lines.push(line.trim_end().to_string());
                (line, line_width, started) = (String::new(), 0, false);
            }
            // A word longer than a line is cut into pieces of `width`.
            let chars: Vec<char> = word.chars().collect();
            let mut pieces = chars.chunks(width).peekable();
            while let Some(piece) = pieces.next() {
                if pieces.peek().is_some() {
                    lines.push(piece.iter().collect());
                } else {
                    line = piece.iter().collect();
                    (line_width, started) = (piece.len(), true);
                }
            }
        }
        lines.push(line.trim_end().to_string());
    }
    lines
}

/// The number of terminal cells `line` takes: its characters less ANSI colour sequences.
pub fn visible_width(line: &str) -> usize {
    let mut width = 0;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ parameters final-byte: skip through the final byte (a letter).
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

/// Columns side by side: line i of the result is line i of each column, each padded to
/// `column_width`, joined by `gap`. Shorter columns are padded with blank lines; trailing spaces
/// are trimmed. Lines must already fit their column ([`wrap`]); a longer one pushes the
/// columns after it to the right rather than being cut.
pub fn side_by_side(columns: &[Vec<String>], column_width: usize, gap: &str) -> Vec<String> {
    let height = columns.iter().map(Vec::len).max().unwrap_or(0);
    (0..height)
        .map(|i| {
            let mut row = String::new();
            for (k, column) in columns.iter().enumerate() {
                let cell = column.get(i).map_or("", String::as_str);
                if k > 0 {
                    row.push_str(gap);
                }
                row.push_str(cell);
                if k + 1 < columns.len() {
                    row.extend(std::iter::repeat_n(' ', column_width.saturating_sub(visible_width(cell))));
                }
            }
            row.trim_end().to_string()
        })
        .collect()
}

/// Columns made of blocks (a step's header, then one block per completion), padded with blank
/// lines so that block k starts on the same line in every column: what [`side_by_side`] then
/// lays out. A column with fewer blocks is blank below its last.
pub fn align_blocks(columns: &[Vec<Vec<String>>]) -> Vec<Vec<String>> {
    let blocks = columns.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = vec![Vec::new(); columns.len()];
    for k in 0..blocks {
        let height = columns.iter().filter_map(|c| c.get(k)).map(Vec::len).max().unwrap_or(0);
        for (column, lines) in columns.iter().zip(out.iter_mut()) {
            let block = column.get(k).map_or(&[][..], Vec::as_slice);
            lines.extend(block.iter().cloned());
            lines.extend(std::iter::repeat_n(String::new(), height - block.len()));
        }
    }
    out
}

/// The width of each of `columns` columns that fit in `width` cells with `gap` between them.
pub fn column_width(width: usize, columns: usize, gap: &str) -> usize {
    let columns = columns.max(1);
    width.saturating_sub(visible_width(gap) * (columns - 1)) / columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_breaks_at_spaces_keeps_line_breaks_and_cuts_long_words() {
        assert_eq!(wrap("the quick brown fox jumps", 10), ["the quick", "brown fox", "jumps"]);
        assert_eq!(wrap("exactly10c", 10), ["exactly10c"]);
        assert_eq!(wrap("one\n\ntwo three", 5), ["one", "", "two", "three"]);
        assert_eq!(wrap("a abcdefghijklmnopqrstuvw b", 10), ["a", "abcdefghij", "klmnopqrst", "uvw b"]);
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("tab\there \x1b[31mred", 20), ["tab    here \u{FFFD}[31mred"]);
        // An indented line keeps its indent; width counts characters, not bytes.
        assert_eq!(wrap("  indented text", 12), ["  indented", "text"]);
        assert_eq!(wrap("ünïcødé wörds", 8), ["ünïcødé", "wörds"]);
        assert_eq!(wrap("abc  def", 4), ["abc", "def"]);
        assert_eq!(wrap("windows\r\nline", 20), ["windows", "line"]);
    }

    #[test]
    fn side_by_side_pads_each_column_and_blanks_the_short_ones() {
        let columns = vec![
            vec!["step 1".to_string(), "abc".to_string()],
            vec!["step 5".to_string()],
            vec!["step 9".to_string(), "x".to_string(), "yz".to_string()],
        ];
        assert_eq!(
            side_by_side(&columns, 8, " | "),
            ["step 1   | step 5   | step 9", "abc      |          | x", "         |          | yz"]
        );
        // Colour codes take no room.
        let coloured = vec![vec!["\x1b[1mab\x1b[0m".to_string()], vec!["cd".to_string()]];
        assert_eq!(side_by_side(&coloured, 4, "|"), ["\x1b[1mab\x1b[0m  |cd"]);
        assert!(side_by_side(&[], 10, " ").is_empty());
        assert_eq!(column_width(100, 3, " │ "), 31);
        assert_eq!(column_width(102, 3, " │ "), 32);
        assert_eq!(column_width(10, 1, " │ "), 10);
    }

    #[test]
    fn blocks_start_on_the_same_line_in_every_column() {
        let lines = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let columns = vec![
            vec![lines(&["a1"]), lines(&["b1", "b2", "b3"])],
            vec![lines(&["a1", "a2"]), lines(&["b1"]), lines(&["c1"])],
        ];
        assert_eq!(
            align_blocks(&columns),
            [lines(&["a1", "", "b1", "b2", "b3", ""]), lines(&["a1", "a2", "b1", "", "", "c1"])]
        );
        assert!(align_blocks(&[]).is_empty());
    }

    #[test]
    fn wrapped_columns_line_up() {
        let texts = ["Wait, let me check: 2 + 3 = 5.", "<answer>5</answer>", "short"];
        let width = column_width(40, 3, " │ ");
        let columns: Vec<Vec<String>> = texts.iter().map(|t| wrap(t, width)).collect();
        let lines = side_by_side(&columns, width, " │ ");
        assert_eq!(
            lines,
            ["Wait, let   │ <answer>5</ │ short", "me check: 2 │ answer>     │", "+ 3 = 5.    │             │"]
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 40));
    }
}
