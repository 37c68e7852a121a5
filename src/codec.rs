//! Binary encoding of stored records and model files (bincode 2 through serde).
//!
//! Kept in one module: bincode is the one dependency with an "unmaintained" advisory, so a
//! swap touches only this file. Decoding is size-limited so a damaged length prefix cannot
//! ask for gigabytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

/// Largest record or model decoded in one call: 2 GiB.
const DECODE_LIMIT: usize = 2 << 30;

/// Encodes a value.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .map_err(|e| Error::backend("bincode", e))
}

/// Decodes a value; `what` names the source for the error message.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    match bincode::serde::decode_from_slice(bytes, config) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok((_, used)) => Err(Error::corrupt(
            what,
            format!("{} trailing bytes after the record", bytes.len() - used),
        )),
        Err(e) => Err(Error::corrupt(what, e.to_string())),
    }
}

/// Encodes a value into a checksummed envelope: magic, version, CRC-32, length, payload.
pub(crate) fn encode_file<T: Serialize>(
    magic: &[u8; 4],
    version: u32,
    value: &T,
) -> Result<Vec<u8>> {
    Ok(envelope(magic, version, &encode(value)?))
}

/// Wraps an encoded payload: magic, version, CRC-32, length, payload. Separate from
/// [`encode_file`] so that the fuzz targets can hand arbitrary payloads to [`decode_file`]
/// past its checksum.
pub(crate) fn envelope(magic: &[u8; 4], version: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 20);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&crate::fsutil::crc32(payload).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks and decodes an envelope written by [`encode_file`].
pub(crate) fn decode_file<T: DeserializeOwned>(
    magic: &[u8; 4],
    version: u32,
    bytes: &[u8],
    path: &std::path::Path,
) -> Result<T> {
    if bytes.len() < 20 {
        return Err(Error::corrupt(
            path,
            format!("{} bytes is shorter than the header", bytes.len()),
        ));
    }
    if &bytes[..4] != magic {
        return Err(Error::corrupt(path, "bad magic number"));
    }
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let got_version = word(4);
    if got_version != version {
        return Err(Error::corrupt(
            path,
            format!("format version {got_version}, this build reads {version}"),
        ));
    }
    let crc = word(8);
    let mut len8 = [0u8; 8];
    len8.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len8);
    let payload = &bytes[20..];
    if payload.len() as u64 != len {
        return Err(Error::corrupt(
            path,
            format!("payload is {} bytes, header says {len}", payload.len()),
        ));
    }
    if crate::fsutil::crc32(payload) != crc {
        return Err(Error::corrupt(path, "checksum mismatch"));
    }
    decode(payload, &path.display().to_string())
}
