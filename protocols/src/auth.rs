//! Authenticated senders: ed25519 signatures and per-account sequence
//! numbers.
//!
//! An account may hold an ed25519 public key ([`Call::SetPublicKey`](crate::model::Call::SetPublicKey)).
//! From then on every transaction it sends must carry an [`Auth`]: the
//! public key, the sender's next sequence number and a signature over the
//! transaction's canonical encoding ([`message`]: the chain id, the id, the
//! sender, the call, the access set, the sequence number and the key).
//! The checks are split by what they need:
//!
//! - **The signature** needs no state. It is checked before a transaction
//!   runs, when the cluster admits it ([`verify`]: batched with the
//!   crate's batch verification, the batches spread over the threads). A
//!   signature that does not verify fails the transaction with
//!   [`TxError::BadSignature`] and nothing runs.
//! - **That the key is the sender's, and the sequence number** need the
//!   sender's state. A signed transaction declares the sender's
//!   authentication keys ([`Transaction::sign`] adds them), and its
//!   execution, in the order the executors and two-phase commit give it,
//!   compares the key with the one stored ([`TxError::WrongKey`]) and the
//!   sequence number with the next one ([`TxError::BadSequence`]), and
//!   counts it. So a signed transaction commits at most once and never
//!   after a later one from the same sender, whatever its id, across
//!   shards, crashes and restarts: the count is state like any other.
//! - **That an unsigned transaction's sender holds no key** is checked by
//!   the executor in block order, before the transaction runs
//!   ([`TxError::SignatureMissing`]): against the keys held when the block
//!   started, and any `SetPublicKey` of the sender earlier in the block
//!   (whether it then commits or not: the judgement comes before
//!   execution, the same in both executors). A cross-shard
//!   transaction reads its sender's sequence key as part of its prepare,
//!   so the coordinator checks it in the transaction's place in its group.
//!   A transaction always involves its sender's shard for this reason.
//!
//! Accounts without a key keep the trusted model: their transactions need
//! no signature, and no sequence number orders them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An ed25519 secret key, to sign transactions with
/// ([`Transaction::sign`]); re-exported from `ed25519-dalek`.
pub use ed25519_dalek::SigningKey;

use crate::model::{AccountId, Key, Transaction, TxError, TxId};

/// The top bit of a sequence key: the account holds a public key.
pub const HAS_KEY: u64 = 1 << 63;

/// What a signature covers besides the transaction, so that a signature
/// made for another purpose never verifies as a transaction's.
const DOMAIN: &[u8] = b"parashard transaction v1";

/// Signatures verified in one batch: large enough to amortise the batch
/// equation, small enough to spread a batch over the threads.
const VERIFY_BATCH: usize = 64;

/// An ed25519 public key: 32 bytes, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; 32]);

/// An ed25519 signature: 64 bytes, hex in JSON.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// A signed transaction's authentication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// The sender's sequence number for this transaction: its count of
    /// committed signed transactions before it.
    pub sequence: u64,
    /// The key it is signed with: the sender's.
    pub public_key: PublicKey,
    /// The signature over [`message`].
    pub signature: Signature,
}

impl PublicKey {
    /// The key of `signing`.
    pub fn of(signing: &SigningKey) -> PublicKey {
        PublicKey(signing.verifying_key().to_bytes())
    }

    /// The key as four words, as an account's state holds it.
    pub(crate) fn words(&self) -> [u64; 4] {
        std::array::from_fn(|i| {
            let bytes: [u8; 8] = self.0[i * 8..i * 8 + 8].try_into().expect("8 bytes");
            u64::from_le_bytes(bytes)
        })
    }
}

/// The bytes a transaction's signature covers: everything about it but the
/// signature, and `chain_id`, so that a signature is valid on one cluster
/// only. Deterministic: the same transaction always encodes alike.
pub fn message(chain_id: u64, tx: &Transaction, sequence: u64, key: &PublicKey) -> Vec<u8> {
    #[derive(Serialize)]
    struct Signed<'a> {
        domain: &'a [u8],
        chain_id: u64,
        id: TxId,
        sender: AccountId,
        call: &'a crate::model::Call,
        access: &'a crate::model::AccessSet,
        gas_limit: u64,
        sequence: u64,
        key: &'a PublicKey,
    }
    let signed = Signed {
        domain: DOMAIN,
        chain_id,
        id: tx.id,
        sender: tx.sender,
        call: &tx.call,
        access: &tx.access,
        gas_limit: tx.gas_limit,
        sequence,
        key,
    };
    postcard::to_stdvec(&signed).expect("encoding to memory cannot fail")
}

/// The sender's authentication keys a signed transaction declares: its
/// sequence key (written) and its public key's words (read).
fn declare(tx: &mut Transaction) {
    let sender = tx.sender;
    let sequence = Key::sequence(sender);
    let access = &mut tx.access;
    if !access.writes.contains(&sequence) {
        // Before the add keys, which stay the tail of the writes.
        let at = access.writes.len() - usize::from(access.adds).min(access.writes.len());
        access.writes.insert(at, sequence);
    }
    for word in 0..4 {
        let key = Key::public_key_word(sender, word);
        if !access.reads.contains(&key) && !access.writes.contains(&key) {
            access.reads.push(key);
        }
    }
}

impl Transaction {
    /// The transaction with `auth` attached, the sender's authentication
    /// keys declared first as [`Transaction::sign`] declares them: how a
    /// signature made elsewhere (a JSON line) is put back on the
    /// transaction it signed.
    pub fn with_auth(mut self, auth: Auth) -> Transaction {
        declare(&mut self);
        self.auth = Some(Box::new(auth));
        self
    }

    /// Signs the transaction as its sender's `sequence`-th signed one for
    /// the cluster `chain_id`, declaring the sender's authentication keys
    /// first (the signature covers the access set).
    pub fn sign(mut self, chain_id: u64, sequence: u64, signing: &SigningKey) -> Transaction {
        use ed25519_dalek::Signer;
        declare(&mut self);
        let public_key = PublicKey::of(signing);
        let signature = signing.sign(&message(chain_id, &self, sequence, &public_key));
        self.auth = Some(Box::new(Auth {
            sequence,
            public_key,
            signature: Signature(signature.to_bytes()),
        }));
        self
    }
}

/// Checks the signatures of `txs` for the cluster `chain_id`: the position
/// and [`TxError::BadSignature`] of each transaction whose signature does
/// not verify, in order (unsigned ones pass: see [`crate::auth`]).
/// Signatures are verified in batches, the batches spread over rayon's
/// threads; a batch that fails is verified one by one to find the bad
/// signatures.
pub fn verify(chain_id: u64, txs: &[Transaction]) -> Vec<(usize, TxError)> {
    use rayon::prelude::*;
    if txs.iter().all(|tx| tx.auth.is_none()) {
        return Vec::new();
    }
    txs.par_chunks(VERIFY_BATCH)
        .enumerate()
        .flat_map_iter(|(c, chunk)| {
            verify_chunk(chain_id, chunk)
                .into_iter()
                .map(move |(i, error)| (c * VERIFY_BATCH + i, error))
        })
        .collect()
}

fn verify_chunk(chain_id: u64, txs: &[Transaction]) -> Vec<(usize, TxError)> {
    let mut results: Vec<Option<TxError>> = vec![None; txs.len()];
    let mut batch = Vec::new();
    for (i, tx) in txs.iter().enumerate() {
        let Some(auth) = &tx.auth else { continue };
        match ed25519_dalek::VerifyingKey::from_bytes(&auth.public_key.0) {
            Ok(key) => {
                let message = message(chain_id, tx, auth.sequence, &auth.public_key);
                let signature = ed25519_dalek::Signature::from_bytes(&auth.signature.0);
                batch.push((i, message, signature, key));
            }
            Err(_) => {
                results[i] = Some(TxError::BadSignature {
                    tx: tx.id,
                    reason: "the public key is not a valid ed25519 point".into(),
                })
            }
        }
    }
    let messages: Vec<&[u8]> = batch.iter().map(|(_, m, _, _)| m.as_slice()).collect();
    let signatures: Vec<_> = batch.iter().map(|(_, _, s, _)| *s).collect();
    let keys: Vec<_> = batch.iter().map(|(_, _, _, k)| *k).collect();
    if ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_err() {
        for (i, message, signature, key) in &batch {
            if key.verify_strict(message, signature).is_err() {
                results[*i] = Some(TxError::BadSignature {
                    tx: txs[*i].id,
                    reason: "the signature does not verify".into(),
                });
            }
        }
    }
    results
        .into_iter()
        .enumerate()
        .filter_map(|(i, error)| Some((i, error?)))
        .collect()
}

/// The key a cross-shard transaction reads besides those it declares: an
/// unsigned one's sender's sequence key, which says whether the sender
/// holds a public key (and so may not send unsigned transactions).
pub fn implicit_key(tx: &Transaction) -> Option<Key> {
    let key = Key::sequence(tx.sender);
    (tx.auth.is_none() && !tx.access.keys().any(|k| *k == key)).then_some(key)
}

/// Why unsigned `tx` may not run, given its sender's `sequence` value:
/// the sender holds a public key. `None` for signed transactions (their
/// execution checks them) and for [`crate::model::Call::SetPublicKey`],
/// which checks for itself.
pub fn refuse_unsigned(tx: &Transaction, sequence: Option<u64>) -> Option<TxError> {
    let holds_key = sequence.is_some_and(|sequence| sequence & HAS_KEY != 0);
    let exempt = tx.auth.is_some() || matches!(tx.call, crate::model::Call::SetPublicKey { .. });
    (holds_key && !exempt).then_some(TxError::SignatureMissing { account: tx.sender })
}

/// The check of a signed transaction's key and sequence number against
/// its sender's stored `sequence` value and public key `words`; returns
/// the sequence key's next value.
pub(crate) fn check(
    sender: AccountId,
    auth: &Auth,
    sequence: u64,
    words: [u64; 4],
) -> Result<u64, TxError> {
    if sequence & HAS_KEY == 0 || words != auth.public_key.words() {
        return Err(TxError::WrongKey { account: sender });
    }
    let expected = sequence & !HAS_KEY;
    if auth.sequence != expected {
        return Err(TxError::BadSequence {
            account: sender,
            expected,
            got: auth.sequence,
        });
    }
    // 2^63 signed transactions from one account cannot happen; the check
    // keeps the flag from being counted over.
    if expected + 1 >= HAS_KEY {
        return Err(TxError::Overflow {
            key: Key::sequence(sender),
        });
    }
    Ok(sequence + 1)
}

fn write_hex<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        serializer.serialize_str(&hex)
    } else {
        serializer.serialize_bytes(bytes)
    }
}

fn read_hex<'de, D: Deserializer<'de>, const N: usize>(
    deserializer: D,
) -> Result<[u8; N], D::Error> {
    use serde::de::Error;
    let bytes: Vec<u8> = if deserializer.is_human_readable() {
        let hex = String::deserialize(deserializer)?;
        if hex.len() != 2 * N || !hex.is_ascii() {
            return Err(D::Error::custom(format!(
                "expected {} hex digits, got {:?}",
                2 * N,
                hex
            )));
        }
        (0..N)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<_, _>>()
            .map_err(|_| D::Error::custom(format!("not hex: {hex:?}")))?
    } else {
        serde_bytes_vec(deserializer)?
    };
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| D::Error::custom(format!("expected {N} bytes, got {}", b.len())))
}

/// Bytes from a binary format, as [`write_hex`] wrote them.
fn serde_bytes_vec<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
    struct Bytes;
    impl<'de> serde::de::Visitor<'de> for Bytes {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("bytes")
        }
        fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
    deserializer.deserialize_bytes(Bytes)
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        write_hex(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<PublicKey, D::Error> {
        read_hex(deserializer).map(PublicKey)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        write_hex(&self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Signature, D::Error> {
        read_hex(deserializer).map(Signature)
    }
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        write!(f, "PublicKey({hex})")
    }
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hex: String = self.0.iter().take(8).map(|b| format!("{b:02x}")).collect();
        write!(f, "Signature({hex}..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AccountId;

    fn key(seed: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
    }

    /// Proves that a signature verifies for its transaction and chain only:
    /// changing the amount, the sequence number, the chain or the key
    /// each makes it fail with `BadSignature`, in a batch of good ones.
    #[test]
    fn signatures_verify_for_their_content_only() {
        let (a, b) = (AccountId(1), AccountId(2));
        let good: Vec<Transaction> = (0..100u64)
            .map(|i| Transaction::transfer(TxId::from_u128(i.into()), a, b, 5).sign(7, i, &key(1)))
            .collect();
        assert_eq!(verify(7, &good), vec![]);
        assert_eq!(verify(8, &good[..1]).len(), 1, "another chain");
        let mut forged = good.clone();
        forged[3].call = crate::model::Call::Transfer { to: b, amount: 6 };
        forged[40].auth.as_mut().expect("signed").sequence += 1;
        forged[77].auth.as_mut().expect("signed").public_key = PublicKey::of(&key(2));
        // A byte string that is no point on the curve.
        let not_a_point = (0..=255u8)
            .map(|b| [b; 32])
            .find(|bytes| ed25519_dalek::VerifyingKey::from_bytes(bytes).is_err())
            .expect("some repeated byte is not a point");
        forged[90].auth.as_mut().expect("signed").public_key = PublicKey(not_a_point);
        let results = verify(7, &forged);
        let refused: Vec<usize> = results.iter().map(|(i, _)| *i).collect();
        assert_eq!(refused, vec![3, 40, 77, 90], "{results:?}");
        for (i, error) in results {
            assert_eq!(
                error,
                TxError::BadSignature {
                    tx: forged[i].id,
                    reason: match i {
                        90 => "the public key is not a valid ed25519 point".into(),
                        _ => "the signature does not verify".into(),
                    }
                }
            );
        }
    }

    /// Proves that signed and unsigned transactions read back from JSON
    /// (keys and signatures in hex) and from the binary form messages take
    /// (postcard), and that a short or non-hex key is refused.
    #[test]
    fn keys_and_signatures_round_trip() {
        let tx = Transaction::transfer(TxId::from_u128(9), AccountId(1), AccountId(2), 5).sign(
            0,
            3,
            &key(5),
        );
        let unsigned = Transaction::transfer(TxId::from_u128(8), AccountId(1), AccountId(2), 5);
        for tx in [tx, unsigned] {
            let json = serde_json::to_string(&tx).expect("encodes");
            assert_eq!(
                serde_json::from_str::<Transaction>(&json).expect("decodes"),
                tx
            );
            let bytes = postcard::to_stdvec(&tx).expect("encodes");
            assert_eq!(
                postcard::from_bytes::<Transaction>(&bytes).expect("decodes"),
                tx
            );
        }
        assert!(serde_json::from_str::<PublicKey>("\"abcd\"").is_err());
        assert!(serde_json::from_str::<PublicKey>(&format!("\"{}\"", "zz".repeat(32))).is_err());
    }
}
