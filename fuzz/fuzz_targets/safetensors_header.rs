//! The safetensors header and offsets check (`weights::SafetensorsFile`), on any bytes: it must
//! return an error naming the file or a file whose every tensor reads back within the buffer.
#![no_main]

use std::path::Path;

use candle_core::{DType, Device, Shape};
use candlewick_core::weights::SafetensorsFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    let file = match SafetensorsFile::parse(path, data) {
        Ok(file) => file,
        Err(e) => {
            assert!(e.to_string().starts_with("fuzz.safetensors: "), "{e}");
            return;
        }
    };
    for name in file.names() {
        // Every tensor lies inside the buffer, so reading it allocates no more than the input.
        let _ = file.tensor(&name, None, DType::F32, &Device::Cpu);
        // A shape the model would expect instead: refused before the data is read.
        let _ = file.tensor(&name, Some(&Shape::from((2, 3))), DType::F16, &Device::Cpu);
    }
    let _ = file.tensor("missing", None, DType::F32, &Device::Cpu);
});
