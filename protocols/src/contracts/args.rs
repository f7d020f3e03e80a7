//! Typed contract arguments: a call's arguments travel as words
//! ([`Value`]s); these traits turn a tuple of typed parts into words and
//! back, with a typed error when the count is wrong.
//!
//! ```
//! use parashard_protocols::contracts::args::Args;
//! use parashard_protocols::{AccountId, Value};
//!
//! let words = (AccountId(9), 50 as Value).encode();
//! assert_eq!(words, vec![9, 50]);
//! let (jar, amount): (AccountId, Value) = Args::decode(&words).unwrap();
//! assert_eq!((jar, amount), (AccountId(9), 50));
//! assert!(<(AccountId, Value)>::decode(&[9]).is_err());
//! ```

use crate::model::{AccountId, AssetId, ContractId, Output, TxError, Value};

/// One argument: a type that is a word.
pub trait Arg: Sized {
    /// The argument from its word.
    fn from_word(word: Value) -> Self;
    /// The argument's word.
    fn into_word(self) -> Value;
}

impl Arg for Value {
    fn from_word(word: Value) -> Value {
        word
    }

    fn into_word(self) -> Value {
        self
    }
}

macro_rules! word_newtype {
    ($($t:ident),*) => {$(
        impl Arg for $t {
            fn from_word(word: Value) -> $t {
                $t(word)
            }

            fn into_word(self) -> Value {
                self.0
            }
        }
    )*};
}

word_newtype!(AccountId, AssetId, ContractId);

/// A call's arguments as a tuple of typed parts.
pub trait Args: Sized {
    /// How many words the arguments take.
    const LEN: usize;

    /// The arguments from a call's words; [`TxError::InvalidInput`] if
    /// there are not exactly [`Args::LEN`] of them.
    fn decode(words: &[Value]) -> Result<Self, TxError>;

    /// The call's words.
    fn encode(self) -> Vec<Value>;
}

macro_rules! tuple_args {
    ($len:literal: $($name:ident $index:tt),*) => {
        impl<$($name: Arg),*> Args for ($($name,)*) {
            const LEN: usize = $len;

            fn decode(words: &[Value]) -> Result<Self, TxError> {
                if words.len() != $len {
                    return Err(TxError::InvalidInput {
                        reason: format!(
                            "the call takes {} arguments, not {}",
                            $len,
                            words.len()
                        ),
                    });
                }
                Ok(($($name::from_word(words[$index]),)*))
            }

            fn encode(self) -> Vec<Value> {
                vec![$(self.$index.into_word()),*]
            }
        }
    };
}

tuple_args!(1: A 0);
tuple_args!(2: A 0, B 1);
tuple_args!(3: A 0, B 1, C 2);
tuple_args!(4: A 0, B 1, C 2, D 3);
tuple_args!(5: A 0, B 1, C 2, D 3, E 4);
tuple_args!(6: A 0, B 1, C 2, D 3, E 4, F 5);
tuple_args!(7: A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_args!(8: A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);

impl Output {
    /// An output of typed parts: what a contract returns for several
    /// results (`Ok(Output::of((amount_out, fee)))`).
    pub fn of(parts: impl Args) -> Output {
        Output::from_words(parts.encode())
    }

    /// The output as typed parts; [`TxError::InvalidInput`] if it has not
    /// exactly [`Args::LEN`] words.
    pub fn decode<T: Args>(&self) -> Result<T, TxError> {
        if self.len() != T::LEN {
            return Err(TxError::InvalidInput {
                reason: format!("the output has {} words, not {}", self.len(), T::LEN),
            });
        }
        T::decode(self.words())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments survive the trip through words, and a wrong count is a
    /// typed error naming both counts.
    #[test]
    fn tuples_round_trip_and_count_is_checked() {
        let parts = (AccountId(1), AssetId(2), ContractId(3), 4 as Value);
        let words = parts.encode();
        assert_eq!(words, vec![1, 2, 3, 4]);
        assert_eq!(
            <(AccountId, AssetId, ContractId, Value)>::decode(&words),
            Ok(parts)
        );
        let error = <(Value, Value)>::decode(&words).unwrap_err();
        assert_eq!(
            error,
            TxError::InvalidInput {
                reason: "the call takes 2 arguments, not 4".into()
            }
        );
        let output = Output::of((AccountId(1), 2 as Value));
        assert_eq!(output.decode(), Ok((AccountId(1), 2 as Value)));
        assert_eq!(
            output.decode::<(Value,)>(),
            Err(TxError::InvalidInput {
                reason: "the output has 2 words, not 1".into()
            })
        );
        let eight = (1u64, 2u64, 3u64, 4u64, 5u64, 6u64, 7u64, 8u64);
        assert_eq!(Args::decode(&eight.encode()), Ok(eight));
    }
}
