//! Fuzz the parser and the renderers: any UTF-8 input must give an AST or diagnostics, never a
//! panic, and every diagnostic must render. Run: `cargo +nightly fuzz run parse` in fuzz/.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut sources = fluxc_syntax::SourceMap::new();
    let id = sources.add("fuzz.flx", text);
    let parsed = fluxc_syntax::parse_file(id, text);
    for d in &parsed.diagnostics {
        let _ = fluxc_core::render_json(d, &sources);
    }
    let _ = fluxc_core::render_text(&parsed.diagnostics, &sources, fluxc_core::TextStyle { color: false });
    if let (Some(file), Some(source)) = (&parsed.file, sources.get(id)) {
        let _ = fluxc_syntax::print::print_file(file, source);
    }
});
