//! The generated code under `src/gen/` is committed so that no build needs
//! `protoc`. This test regenerates it with the vendored `protoc` and fails on
//! any difference. Run with `PALISADE_REGENERATE=1` to rewrite the file.

use std::path::PathBuf;

#[test]
fn generated_code_is_current() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let protoc = protoc_bin_vendored::protoc_bin_path().unwrap();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // An event's line as `Bytes`: the manager decodes it as a slice of the
    // received message, not a copy per line (same wire format).
    config.bytes([".palisade.v1.Event.line"]);
    tonic_prost_build::configure()
        .out_dir(out.path())
        .codec_path("crate::codec::LeanCodec")
        .compile_with_config(
            config,
            &[root.join("proto/palisade/v1/palisade.proto")],
            &[
                root.join("proto"),
                protoc_bin_vendored::include_path().unwrap(),
            ],
        )
        .unwrap();
    let fresh = std::fs::read_to_string(out.path().join("palisade.v1.rs")).unwrap();
    let committed_path = root.join("src/gen/palisade.v1.rs");
    if std::env::var_os("PALISADE_REGENERATE").is_some() {
        std::fs::write(&committed_path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    assert!(
        committed == fresh,
        "src/gen/palisade.v1.rs is stale: run `PALISADE_REGENERATE=1 cargo test -p palisade-proto --test generated_code` and commit the result"
    );
}
