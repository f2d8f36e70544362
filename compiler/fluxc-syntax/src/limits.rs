//! Limits on source text. Each is a named constant with its own clear error (E0102).

/// A source file may hold at most this many bytes (LANGUAGE.md §10.2).
pub const MAX_SOURCE_BYTES: usize = 4 * 1024 * 1024;

/// Brackets, blocks and expressions may nest at most this deep (LANGUAGE.md §10.2).
pub const MAX_NESTING: usize = 256;

/// The parser runs on its own thread with this much stack, far more than
/// [`MAX_NESTING`] levels of the grammar's recursion need.
pub const PARSER_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Definitions may depend on each other (a function calling a function calling …, a layer
/// containing a layer …) at most this many levels deep; past it, E0102. The checker walks such
/// chains recursively, on a thread with [`CHECKER_STACK_BYTES`] of stack.
pub const MAX_DEPENDENCY_DEPTH: usize = 4096;

/// The checker's stack: far more than [`MAX_DEPENDENCY_DEPTH`] levels need (measured: under
/// 8 KiB a level).
pub const CHECKER_STACK_BYTES: usize = 256 * 1024 * 1024;
