//! Options read from the JavaScript object as given, field by field: a few typed reads
//! instead of a generic conversion, so that the wasm carries no deserializer per options
//! type. Strict like the types say: an unknown name or a value of the wrong type is refused
//! with `invalid_argument`, naming the option (never its value, which may be a secret).
//! `undefined` (and, as `JSON.stringify` would drop it, a function) means absent; `null`
//! means absent too, except where a type says otherwise.

use js_sys::{Array, Object, Reflect};
use wasm_bindgen::{JsCast, JsValue};

use crate::error;

/// One options object and, for a nested one, the option it sits under (`timing`,
/// `endpoints`), for messages.
pub(crate) struct Fields {
    object: Object,
    parent: Option<&'static str>,
}

fn refused(parent: Option<&str>, name: &str, what: &str) -> JsValue {
    let mut message = String::from("invalid argument: `");
    if let Some(parent) = parent {
        message.push_str(parent);
        message.push('.');
    }
    message.push_str(name);
    message.push_str("` ");
    message.push_str(what);
    error("invalid_argument", &message)
}

fn is_absent(value: &JsValue) -> bool {
    value.is_undefined() || value.is_null() || value.is_function()
}

impl Fields {
    /// `value` as an options object whose names are all among `known`.
    pub(crate) fn new(value: &JsValue, parent: Option<&'static str>, known: &[&str]) -> Result<Fields, JsValue> {
        if !value.is_object() || value.is_function() || Array::is_array(value) {
            let mut message = String::from(parent.unwrap_or("options"));
            message.push_str(" must be a plain object");
            return Err(error("invalid_argument", &message));
        }
        let object: Object = value.clone().unchecked_into();
        for name in Object::keys(&object).iter() {
            let name = name.as_string().unwrap_or_default();
            if !known.contains(&name.as_str()) {
                let value = Reflect::get(&object, &JsValue::from_str(&name)).unwrap_or(JsValue::UNDEFINED);
                if !(value.is_undefined() || value.is_function()) {
                    return Err(refused(parent, &name, "is not an option"));
                }
            }
        }
        Ok(Fields { object, parent })
    }

    fn get(&self, name: &str) -> JsValue {
        Reflect::get(&self.object, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
    }

    /// `name`'s value as `read` takes it, `None` when absent, refused with `must` otherwise.
    fn typed<T>(&self, name: &str, read: impl FnOnce(&JsValue) -> Option<T>, must: &str) -> Result<Option<T>, JsValue> {
        let value = self.get(name);
        if is_absent(&value) {
            return Ok(None);
        }
        read(&value).map(Some).ok_or_else(|| refused(self.parent, name, must))
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, JsValue> {
        self.typed(name, JsValue::as_string, "must be a string")
    }

    pub(crate) fn boolean(&self, name: &str) -> Result<Option<bool>, JsValue> {
        self.typed(name, JsValue::as_bool, "must be true or false")
    }

    pub(crate) fn number(&self, name: &str) -> Result<Option<f64>, JsValue> {
        self.typed(name, JsValue::as_f64, "must be a number")
    }

    /// A whole number from 0 to 2^32 - 1.
    pub(crate) fn count(&self, name: &str) -> Result<Option<u32>, JsValue> {
        match self.number(name)? {
            None => Ok(None),
            // Range and integrality checked: the conversion is exact.
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(n) if n.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
            Some(_) => Err(refused(self.parent, name, "must be a whole number, 0 or more")),
        }
    }

    /// A count where `null` means "none" (`Some(None)`), and absent is `None`.
    pub(crate) fn count_or_null(&self, name: &str) -> Result<Option<Option<u32>>, JsValue> {
        if self.get(name).is_null() {
            return Ok(Some(None));
        }
        Ok(self.count(name)?.map(Some))
    }

    pub(crate) fn strings(&self, name: &str) -> Result<Option<Vec<String>>, JsValue> {
        let value = self.get(name);
        if is_absent(&value) {
            return Ok(None);
        }
        let refuse = || refused(self.parent, name, "must be an array of strings");
        if !Array::is_array(&value) {
            return Err(refuse());
        }
        Array::from(&value).iter().map(|item| item.as_string().ok_or_else(refuse)).collect::<Result<_, _>>().map(Some)
    }

    /// An array of `[name, value]` string pairs.
    pub(crate) fn pairs(&self, name: &str) -> Result<Option<Vec<(String, String)>>, JsValue> {
        let value = self.get(name);
        if is_absent(&value) {
            return Ok(None);
        }
        let refuse = || refused(self.parent, name, "must be an array of [name, value] string pairs");
        if !Array::is_array(&value) {
            return Err(refuse());
        }
        let pair = |item: JsValue| {
            let pair =
                Array::is_array(&item).then(|| Array::from(&item)).filter(|p| p.length() == 2).ok_or_else(refuse)?;
            match (pair.get(0).as_string(), pair.get(1).as_string()) {
                (Some(name), Some(value)) => Ok((name, value)),
                _ => Err(refuse()),
            }
        };
        Array::from(&value).iter().map(pair).collect::<Result<_, _>>().map(Some)
    }

    /// One of `choices`, by its name.
    pub(crate) fn choice<T: Copy>(&self, name: &str, choices: &[(&str, T)]) -> Result<Option<T>, JsValue> {
        let Some(given) = self.string(name)? else { return Ok(None) };
        match choices.iter().find(|(n, _)| *n == given) {
            Some((_, choice)) => Ok(Some(*choice)),
            None => {
                let mut what = String::from("must be one of");
                for (i, (n, _)) in choices.iter().enumerate() {
                    what.push_str(if i == 0 { " \"" } else { ", \"" });
                    what.push_str(n);
                    what.push('"');
                }
                Err(refused(self.parent, name, &what))
            }
        }
    }

    /// Several of `choices`, by their names.
    pub(crate) fn choices<T: Copy>(&self, name: &str, choices: &[(&str, T)]) -> Result<Option<Vec<T>>, JsValue> {
        let Some(given) = self.strings(name)? else { return Ok(None) };
        let find = |given: &String| choices.iter().find(|(n, _)| n == given).map(|(_, c)| *c);
        given
            .iter()
            .map(|g| find(g).ok_or_else(|| refused(self.parent, name, "names an unknown choice")))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    /// The object under `name`, whose names are all among `known`, as `read` takes it.
    pub(crate) fn object<T>(
        &self,
        name: &'static str,
        known: &[&str],
        read: impl FnOnce(&Fields) -> Result<T, JsValue>,
    ) -> Result<Option<T>, JsValue> {
        let value = self.get(name);
        if is_absent(&value) {
            return Ok(None);
        }
        read(&Fields::new(&value, Some(name), known)?).map(Some)
    }

    /// A string `name` must have.
    pub(crate) fn required_string(&self, name: &str) -> Result<String, JsValue> {
        self.string(name)?.ok_or_else(|| refused(self.parent, name, "is required (a string)"))
    }
}
