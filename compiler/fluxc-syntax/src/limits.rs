//! Limits on source text. Each is a named constant with its own clear error (E0102).

/// A source file may hold at most this many bytes (LANGUAGE.md §10.2).
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;

/// Brackets, blocks and expressions may nest at most this deep (LANGUAGE.md §10.2).
pub const MAX_NESTING: usize = 256;

/// The parser runs on its own thread with this much stack, far more than
/// [`MAX_NESTING`] levels of the grammar's recursion need.
pub const PARSER_STACK_BYTES: usize = 256 * 1024 * 1024;
