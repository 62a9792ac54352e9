//! Pre-decoding and decoding arbitrary lines with OSSEC 3.8's decoders never
//! panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_engine::decoder::DecoderSet;

fn set() -> &'static DecoderSet {
    static S: OnceLock<DecoderSet> = OnceLock::new();
    S.get_or_init(|| {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/corpus/ossec/etc/decoder.xml");
        DecoderSet::load_files(&[p]).unwrap_or_default()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut ev = palisade_engine::predecode::predecode(data, "stdin", "fuzz");
    set().decode(&mut ev);
});
