//! Generates the Rust code for `proto/rqd.proto`: messages with rust-protobuf 3 and the grpcio
//! service stubs with grpcio-compiler.
//!
//! grpcio-compiler 0.13 only reads rust-protobuf 2 descriptors, so the descriptors parsed by
//! protobuf-parse 3 (which, unlike the pure 2.x parser, keeps `service` blocks) are re-encoded
//! and decoded as 2.x descriptors: the wire format of a descriptor is the same in both. No
//! `protoc` binary is needed.

use std::{env, fs, path::PathBuf};

use protobuf::Message as _;
use protobuf2::Message as _;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=proto");

    protobuf_codegen::Codegen::new()
        .pure()
        .include("proto")
        .input("proto/rqd.proto")
        .out_dir(&out)
        .run_from_script();

    let parsed = protobuf_parse::Parser::new()
        .pure()
        .include("proto")
        .input("proto/rqd.proto")
        .parse_and_typecheck()
        .expect("proto/rqd.proto parses");
    let descriptors: Vec<protobuf2::descriptor::FileDescriptorProto> = parsed
        .file_descriptors
        .iter()
        .map(|f| {
            let bytes = f.write_to_bytes().expect("descriptor encodes");
            protobuf2::descriptor::FileDescriptorProto::parse_from_bytes(&bytes)
                .expect("descriptor decodes as protobuf 2")
        })
        .collect();
    let files: Vec<String> = parsed
        .relative_paths
        .iter()
        .map(|p| p.to_str().to_owned())
        .collect();
    for generated in grpcio_compiler::codegen::r#gen(&descriptors, &files) {
        fs::write(out.join(&generated.name), &generated.content).expect("write grpc stubs");
    }

    // Generated files start with inner attributes, which `include!` inside a module rejects;
    // `#[path]` module declarations accept them.
    let mut modules = String::new();
    for stem in ["rqd", "rqd_grpc"] {
        let path = out.join(format!("{stem}.rs"));
        modules.push_str(&format!("#[path = {path:?}]\npub mod {stem};\n"));
    }
    fs::write(out.join("pb_mod.rs"), modules).expect("write pb_mod.rs");
}
