//! Bucketed summaries of row hashes: per table, rows are spread over [`BUCKETS`] buckets by the
//! hash of their key; each bucket keeps a row count and an order-independent sum of row hashes.
//! Two sides with equal buckets hold the same rows (up to a 2^-128 collision). They give each
//! side's fingerprint, `--sample` (the first buckets' rows), and the source's summary saved with a
//! table's baseline (`diff::baseline`). A bucket can be updated row by row (`add` / `remove`), but
//! only with the old row's hash, which key-only capture does not have: the sign-off after sync
//! compares the changed keys instead (see `diff::changed`).

use serde::{Deserialize, Serialize};

/// Buckets per table: 256 keeps a summary small (a few KB) while a change touches 1/256 of it.
pub const BUCKETS: usize = 256;

/// One bucket: how many rows and the wrapping sum of their hashes' first 16 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    pub rows: u64,
    /// Hex of the 128-bit wrapping sum (JSON has no 128-bit integers).
    #[serde(with = "hex_u128")]
    pub sum: u128,
}

/// The summary of one table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableBuckets {
    pub buckets: Vec<Bucket>,
}

impl Default for TableBuckets {
    fn default() -> Self {
        TableBuckets {
            buckets: vec![Bucket::default(); BUCKETS],
        }
    }
}

/// The bucket a key hash falls in.
pub fn bucket_of(key_hash: &[u8; 32]) -> usize {
    usize::from(key_hash[0]) % BUCKETS
}

fn fold(row_hash: &[u8; 32]) -> u128 {
    u128::from_be_bytes(row_hash[..16].try_into().expect("16 bytes"))
}

impl TableBuckets {
    pub fn add(&mut self, key_hash: &[u8; 32], row_hash: &[u8; 32]) {
        let b = &mut self.buckets[bucket_of(key_hash)];
        b.rows += 1;
        b.sum = b.sum.wrapping_add(fold(row_hash));
    }

    /// Undoes an `add` of the same row (a delete, or the old image of an update).
    pub fn remove(&mut self, key_hash: &[u8; 32], row_hash: &[u8; 32]) {
        let b = &mut self.buckets[bucket_of(key_hash)];
        b.rows = b.rows.saturating_sub(1);
        b.sum = b.sum.wrapping_sub(fold(row_hash));
    }

    /// Buckets whose count or sum differ from `other`'s.
    pub fn differing(&self, other: &TableBuckets) -> Vec<usize> {
        (0..BUCKETS)
            .filter(|&i| self.buckets[i] != other.buckets[i])
            .collect()
    }

    pub fn rows(&self) -> u64 {
        self.buckets.iter().map(|b| b.rows).sum()
    }

    /// A fingerprint of the whole table: blake3 of every bucket.
    pub fn fingerprint(&self) -> String {
        let mut h = blake3::Hasher::new();
        for b in &self.buckets {
            h.update(&b.rows.to_be_bytes());
            h.update(&b.sum.to_be_bytes());
        }
        h.finalize().to_hex().to_string()
    }
}

mod hex_u128 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{v:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let s = String::deserialize(d)?;
        u128::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> [u8; 32] {
        *blake3::hash(&[n]).as_bytes()
    }

    #[test]
    fn order_independent_and_reversible() {
        let (mut a, mut b) = (TableBuckets::default(), TableBuckets::default());
        for n in 0..50 {
            a.add(&h(n), &h(n + 100));
        }
        for n in (0..50).rev() {
            b.add(&h(n), &h(n + 100));
        }
        assert_eq!(a, b);
        assert_eq!(a.fingerprint(), b.fingerprint());
        b.remove(&h(7), &h(107));
        b.add(&h(7), &h(200));
        assert_eq!(a.differing(&b), vec![bucket_of(&h(7))]);
        b.remove(&h(7), &h(200));
        b.add(&h(7), &h(107));
        assert_eq!(a, b);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<TableBuckets>(&json).unwrap(), a);
    }
}
