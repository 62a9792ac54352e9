//! The lenient XML reader and variable substitution never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(els) = palisade_engine::xml::parse(&text) {
        let _ = palisade_engine::xml::apply_variables(els);
    }
});
