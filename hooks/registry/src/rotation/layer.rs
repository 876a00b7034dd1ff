//! Reading small files out of an image layer (a tar, gzip-compressed or not) as it
//! streams in, stopping as soon as nothing more is wanted.

use std::io::Read;

/// The most a wanted file may hold: `images_digests.json` of a real release is tens
/// of kilobytes; anything far larger is not what we look for.
pub const MAX_FILE: u64 = 16 << 20;

/// Files found in a layer, as (path, content).
pub type Files = Vec<(String, Vec<u8>)>;

/// Bounds of one layer's reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The most a wanted file may hold.
    pub max_file: u64,
    /// The most bytes the layer may unpack to (a tar after gunzip) before the reading
    /// stops with an error: a small compressed layer can unpack to terabytes.
    pub max_unpacked: u64,
}

/// The rotation's bounds: [`MAX_FILE`], no bound on the unpacked size (it reads
/// the mirror its administrator pushed).
pub const ROTATION: Limits = Limits {
    max_file: MAX_FILE,
    max_unpacked: u64::MAX,
};

/// Files of the layer whose path (without a leading `./` or `/`) `wanted` accepts,
/// as (path, content), in layer order. Stops reading after `limit` matches.
pub fn find_files(
    layer: impl Read,
    wanted: impl Fn(&str) -> bool,
    limit: usize,
) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    find_files_within(layer, wanted, limit, ROTATION).map(|(files, _)| files)
}

/// Counts what is read through it and fails once more than `left` bytes came.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other("the layer unpacks to more than its bound: not read further")
        })?;
        Ok(n)
    }
}

/// [`find_files`] within `limits`: a wanted file larger than `max_file`, or a layer
/// that unpacks to more than `max_unpacked` bytes, is an error. Also returns the bytes
/// unpacked.
pub fn find_files_within(
    layer: impl Read,
    wanted: impl Fn(&str) -> bool,
    limit: usize,
    limits: Limits,
) -> std::io::Result<(Files, u64)> {
    let mut buffered = std::io::BufReader::new(layer);
    let gz = {
        use std::io::BufRead;
        let head = buffered.fill_buf()?;
        head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b
    };
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut reader = Capped {
        inner: reader,
        left: limits.max_unpacked,
    };
    let mut archive = tar::Archive::new(&mut reader);
    let mut out = Vec::new();
    for entry in archive.entries()? {
        // Some builders (umoci 0.4) end a layer without the tar's final padding and
        // end-of-archive blocks; what was read up to there is the layer.
        let mut entry = match entry {
            Ok(e) => e,
            Err(e)
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.to_string().starts_with("unexpected EOF") =>
            {
                break
            }
            Err(e) => return Err(e),
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        if !wanted(&path) {
            continue;
        }
        if entry.size() > limits.max_file {
            return Err(std::io::Error::other(format!(
                "{path} is {} bytes, more than {}: not a digests file",
                entry.size(),
                limits.max_file
            )));
        }
        let mut content = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut content)?;
        if content.len() as u64 != entry.size() {
            return Err(std::io::Error::other(format!("{path} is cut short")));
        }
        out.push((path, content));
        if out.len() >= limit {
            break;
        }
    }
    Ok((out, limits.max_unpacked - reader.left))
}

/// A layer for tests: a tar of `files` (path, content; mode 0644), gzip-compressed when
/// `gzip`.
#[cfg(test)]
pub(crate) fn test_layer(files: &[(&str, &[u8])], gzip: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, c) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(c.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, p, *c).unwrap();
    }
    let raw = b.into_inner().unwrap();
    if !gzip {
        return raw;
    }
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut e, &raw).unwrap();
    e.finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_in_plain_and_gzip_layers() {
        for gzip in [false, true] {
            let l = test_layer(
                &[
                    ("etc/x", b"x"),
                    ("./deckhouse/modules/images_digests.json", b"{}"),
                    ("deckhouse/candi/images_digests.json", b"{\"a\":1}"),
                ],
                gzip,
            );
            let found = find_files(&l[..], |p| p.ends_with("images_digests.json"), 10).unwrap();
            assert_eq!(found.len(), 2);
            assert_eq!(found[0].0, "deckhouse/modules/images_digests.json");
            let first = find_files(&l[..], |p| p.ends_with(".json"), 1).unwrap();
            assert_eq!(first.len(), 1);
        }
        let l = test_layer(&[("big.bin", &vec![0u8; 1 << 20]), ("x.json", b"{}")], true);
        let tight = Limits {
            max_file: 1,
            max_unpacked: 64 << 10,
        };
        let e = find_files_within(&l[..], |p| p.ends_with(".json"), 1, tight).unwrap_err();
        assert!(e.to_string().contains("unpacks to more than"), "{e}");
        let small = Limits {
            max_file: 1,
            max_unpacked: u64::MAX,
        };
        let e = find_files_within(&l[..], |p| p.ends_with(".json"), 1, small).unwrap_err();
        assert!(e.to_string().contains("more than 1"), "{e}");
        assert!(
            find_files(&b"not a tar at all, just text"[..], |_| true, 1).is_err()
                || find_files(&b"not a tar at all, just text"[..], |_| true, 1)
                    .unwrap()
                    .is_empty()
        );
    }
}
