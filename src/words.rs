//! Closed lists of words: what a profile key may say and what vakt reads from the host, each an
//! enum with its words in one table. A profile's word is read by serde (an unknown one is
//! "unknown variant `x`, expected one of …", which the profile turns into a "did you mean");
//! a host's word is parsed once where it is read, and compared as the enum after that.

/// An enum whose values are a fixed list of words.
pub trait Word: Sized + Copy + 'static {
    /// Every word, in the order a message lists them.
    const WORDS: &'static [&'static str];
    /// The value a word names.
    fn from_word(word: &str) -> Option<Self>;
    fn as_str(self) -> &'static str;
    /// Whether a profile may ask for this value (some are only ever observed).
    fn wanted(self) -> bool {
        true
    }
}

/// Declares a [`Word`] enum: `Variant = "word"`, serde reading and writing the words; a
/// trailing `wanted(A, B)` limits what a profile may ask for to those.
#[macro_export]
macro_rules! words {
    ($(#[$meta:meta])* $vis:vis enum $name:ident { $($(#[$vmeta:meta])* $variant:ident = $word:literal),+ $(,)? } $(wanted($($wanted:ident),+))?) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $word)] $variant),+
        }

        #[allow(dead_code)]
        impl $name {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word),+
                }
            }

            pub fn from_word(word: &str) -> Option<Self> {
                match word {
                    $($word => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl $crate::words::Word for $name {
            const WORDS: &'static [&'static str] = &[$($word),+];
            fn from_word(word: &str) -> Option<Self> {
                $name::from_word(word)
            }
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }
            $(fn wanted(self) -> bool {
                matches!(self, $($name::$wanted)|+)
            })?
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::words::Word::as_str(*self))
            }
        }
    };
}

/// serde's message for a word not in `allowed`, in the form the profile's error text rewrites.
pub fn unknown(word: &str, allowed: impl IntoIterator<Item = &'static str>) -> String {
    let list: Vec<String> = allowed.into_iter().map(|w| format!("`{w}`")).collect();
    format!("unknown variant `{word}`, expected one of {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    words! {
        enum Colour { Red = "red", DarkBlue = "dark-blue" }
    }

    #[test]
    fn words_round_trip_through_serde() {
        for w in Colour::WORDS {
            let c = Colour::from_word(w).expect("word");
            assert_eq!(c.as_str(), *w);
            let json = serde_json::to_string(&c).expect("ser");
            assert_eq!(json, format!("\"{w}\""));
            assert_eq!(serde_json::from_str::<Colour>(&json).expect("de"), c);
        }
        assert_eq!(Colour::from_word("blue"), None);
        let e = serde_json::from_str::<Colour>("\"blu\"").expect_err("unknown");
        assert!(e.to_string().starts_with("unknown variant `blu`, expected `red` or `dark-blue`"), "{e}");
        assert_eq!(unknown("blu", ["red", "dark-blue"]), "unknown variant `blu`, expected one of `red`, `dark-blue`");
    }
}
