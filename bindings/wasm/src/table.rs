//! The declaration of an options object: one table per object, one line per option.

/// Declares an options object from one table. Each line names an option once:
///
/// ```text
/// /// Its documentation (also its TypeScript comment).
/// rust_name: Type = "jsName", reader(arguments) => |target, value| target.call(value);
/// ```
///
/// and from it come the struct whose TypeScript type tsify generates (every option optional,
/// named `jsName`), the list of names the object may have (`NAMES`: any other is refused),
/// the typed reading of each option (`read`: `Fields::reader("jsName", arguments)`, which
/// refuses a value of the wrong type naming the option) and the call that hands the value
/// on (`apply`: each given option, in table order, to a builder or a value that starts from
/// its defaults). A line without `=> …` is read but handed on by hand (the choice among
/// `instance`, `issuer` and `endpoints`). The closure may take a third name, bound to the
/// option's JavaScript name, for its own messages.
macro_rules! options_table {
    (
        $(#[$meta:meta])*
        pub struct $name:ident => $target:ty {
            $(
                $(#[$field_meta:meta])*
                $field:ident: $ty:ty = $js:literal, $read:ident $(($($arg:expr),* $(,)?))?
                    $(=> |$b:ident, $v:ident $(, $n:ident)?| $body:expr)?;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(tsify::Tsify, Default)]
        pub struct $name {
            $(
                $(#[$field_meta])*
                #[serde(rename = $js)]
                #[tsify(optional)]
                pub(crate) $field: Option<$ty>,
            )*
        }

        impl $name {
            /// The names this object may have.
            pub(crate) const NAMES: &'static [&'static str] = &[$($js),*];

            /// Reads the options `given` has, each by its type.
            pub(crate) fn read(given: &$crate::fields::Fields) -> Result<Self, wasm_bindgen::JsValue> {
                // Filled in place: a refusal then drops one value, not each option read so
                // far on a path of its own (a smaller wasm).
                let mut read = Self::default();
                $(read.$field = given.$read($js $($(, $arg)*)?)?;)*
                Ok(read)
            }

            /// Hands each given option on to `target`, in table order.
            #[allow(unused_mut, unused_variables)]
            fn apply(self, mut target: $target) -> Result<$target, wasm_bindgen::JsValue> {
                $($(
                    if let Some($v) = self.$field {
                        $(let $n: &'static str = $js;)?
                        let mut $b = target;
                        target = $body;
                    }
                )?)*
                Ok(target)
            }
        }
    };
}

pub(crate) use options_table;
