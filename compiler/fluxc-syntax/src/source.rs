//! Source files and the mapping from byte offsets to lines and columns.

use crate::span::{FileId, Span};

/// A 1-based line and column. Columns count Unicode scalar values (a tab is one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

/// One source file: its display name (as the user gave it), its text, and its line starts.
#[derive(Clone, Debug)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile { name: name.into(), text, line_starts }
    }

    /// Clamps `offset` into the text and back onto a character boundary.
    fn clamp(&self, offset: usize) -> usize {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        offset
    }

    /// 0-based line index containing `offset`.
    fn line_index(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&start| start <= offset).saturating_sub(1)
    }

    fn line_start(&self, line_index: usize) -> usize {
        self.line_starts.get(line_index).copied().unwrap_or(0)
    }

    /// 1-based line and column (in Unicode scalar values) of a byte offset.
    pub fn line_col(&self, offset: usize) -> LineCol {
        let offset = self.clamp(offset);
        let line = self.line_index(offset);
        let start = self.line_start(line);
        let column = self.text.get(start..offset).map_or(0, |s| s.chars().count());
        LineCol { line: line + 1, column: column + 1 }
    }

    /// 0-based line and UTF-16 column of a byte offset (what the LSP speaks).
    pub fn line_col_utf16(&self, offset: usize) -> (usize, usize) {
        let offset = self.clamp(offset);
        let line = self.line_index(offset);
        let start = self.line_start(line);
        let column = self.text.get(start..offset).map_or(0, |s| s.encode_utf16().count());
        (line, column)
    }

    /// Byte offset of a 0-based line and UTF-16 column, clamped to the line.
    pub fn offset_of_utf16(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.line_starts.get(line) else {
            return self.text.len();
        };
        let mut units = 0;
        for (i, c) in self.text.get(start..).unwrap_or("").char_indices() {
            if units >= column || c == '\n' {
                return start + i;
            }
            units += c.len_utf16();
        }
        self.text.len()
    }

    pub fn line_count(&self) -> usize {
        self.line_starts.len()
    }

    /// The text of a span, or "" when it does not fit.
    pub fn slice(&self, span: Span) -> &str {
        self.text.get(span.range()).unwrap_or("")
    }
}

/// Every file of one compilation, addressed by [`FileId`].
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let id = FileId(u32::try_from(self.files.len()).unwrap_or(u32::MAX));
        self.files.push(SourceFile::new(name, text));
        id
    }

    pub fn get(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &SourceFile)> {
        self.files.iter().enumerate().map(|(i, f)| (FileId(i as u32), f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_count_scalar_values_and_lines_are_one_based() {
        let f = SourceFile::new("t.flx", "a\té=x\r\nλ y");
        assert_eq!(f.line_col(0), LineCol { line: 1, column: 1 });
        assert_eq!(f.line_col(2), LineCol { line: 1, column: 3 }); // é after a tab
        assert_eq!(f.line_col(4), LineCol { line: 1, column: 4 }); // '=' after the 2-byte é
        assert_eq!(f.line_col(8), LineCol { line: 2, column: 1 });
        assert_eq!(f.line_col(11), LineCol { line: 2, column: 3 }); // 'y' after λ and a space
        assert_eq!(f.line_col(3), LineCol { line: 1, column: 3 }); // inside é: clamped back
    }

    #[test]
    fn utf16_columns_round_trip() {
        let f = SourceFile::new("t.flx", "x\n𝑥 = 1\n");
        let at = f.text.find('=').unwrap_or(0);
        assert_eq!(f.line_col_utf16(at), (1, 3)); // 𝑥 is two UTF-16 units
        assert_eq!(f.offset_of_utf16(1, 3), at);
        assert_eq!(f.offset_of_utf16(9, 0), f.text.len());
    }
}
