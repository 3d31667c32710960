//! The customer and its four kinds of sub-record, as the till sends them, with their rules.
//!
//! Each record has a full form (sent on create) and a patch form (sent on edit: only the fields
//! present change; `null` clears an optional field). Unknown fields are refused so that a typo at
//! the till is an error, not a silently dropped value.

use serde::{Deserialize, Serialize};

use super::validation::{self as v, Checked, FieldError};

/// Records and patches that can check their own fields.
pub trait Validate {
    /// Checks every field; the first broken rule is returned.
    fn validate(&self) -> Checked;
}

/// A customer as created at the till.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCustomer {
    /// Given name; any script.
    pub first_name: String,
    /// Family name; any script.
    pub last_name: String,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// HQ customer group, e.g. `RETAIL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_group: Option<String>,
    /// Preferred language tag, e.g. `et-EE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

impl Validate for NewCustomer {
    fn validate(&self) -> Checked {
        v::name("first_name", &self.first_name)?;
        v::name("last_name", &self.last_name)?;
        v::optional(self.email.as_deref(), |e| v::email("email", e))?;
        v::optional(self.phone.as_deref(), |p| v::phone("phone", p))?;
        v::optional(self.customer_group.as_deref(), |g| {
            v::code("customer_group", g, 20)
        })?;
        v::optional(self.language.as_deref(), |l| v::language("language", l))
    }
}

/// An edit of a customer: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomerPatch {
    /// New given name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub first_name: Option<String>,
    /// New family name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub last_name: Option<String>,
    /// New e-mail; `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub email: Option<Option<String>>,
    /// New phone; `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub phone: Option<Option<String>>,
    /// New customer group; `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub customer_group: Option<Option<String>>,
    /// New language; `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub language: Option<Option<String>>,
}

/// A patch field that may be absent but never `null`: the field is required on the record, so
/// `null` cannot clear it and is refused as a wrong type.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

fn non_empty_patch(is_empty: bool) -> Checked {
    if is_empty {
        return Err(FieldError::new(
            "body",
            "non_empty_patch",
            "an edit must change at least one field",
        ));
    }
    Ok(())
}

impl Validate for CustomerPatch {
    fn validate(&self) -> Checked {
        non_empty_patch(self == &Self::default())?;
        v::optional(self.first_name.as_deref(), |n| v::name("first_name", n))?;
        v::optional(self.last_name.as_deref(), |n| v::name("last_name", n))?;
        v::optional(self.email.as_ref().and_then(Option::as_deref), |e| {
            v::email("email", e)
        })?;
        v::optional(self.phone.as_ref().and_then(Option::as_deref), |p| {
            v::phone("phone", p)
        })?;
        v::optional(
            self.customer_group.as_ref().and_then(Option::as_deref),
            |g| v::code("customer_group", g, 20),
        )?;
        v::optional(self.language.as_ref().and_then(Option::as_deref), |l| {
            v::language("language", l)
        })
    }
}

impl CustomerPatch {
    /// The current values of the fields this edit changes: `{"last_name": "Tamm"}`. HQ uses
    /// them to tell a field changed here only from one changed on both sides.
    pub fn base_values(&self, current: &NewCustomer) -> serde_json::Value {
        let changed = serde_json::to_value(self).unwrap_or_default();
        let now = serde_json::to_value(current).unwrap_or_default();
        let base: serde_json::Map<String, serde_json::Value> = changed
            .as_object()
            .map(|m| {
                m.keys()
                    .map(|k| {
                        (
                            k.clone(),
                            now.get(k).cloned().unwrap_or(serde_json::Value::Null),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        serde_json::Value::Object(base)
    }

    /// Applies this edit to a customer's fields.
    pub fn apply_to(&self, c: &mut NewCustomer) {
        set(&mut c.first_name, &self.first_name);
        set(&mut c.last_name, &self.last_name);
        set(&mut c.email, &self.email);
        set(&mut c.phone, &self.phone);
        set(&mut c.customer_group, &self.customer_group);
        set(&mut c.language, &self.language);
    }
}

fn set<T: Clone>(target: &mut T, change: &Option<T>) {
    if let Some(value) = change {
        target.clone_from(value);
    }
}

/// What an address is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressPurpose {
    /// Home address.
    Home,
    /// Delivery address.
    Delivery,
    /// Invoice address.
    Invoice,
    /// Business address.
    Business,
}

/// A postal address of a customer (HQ table RETAILASYNCADDRESSV2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Street and house number.
    pub street: String,
    /// City or town.
    pub city: String,
    /// Postal code.
    pub postal_code: String,
    /// ISO 3166-1 alpha-3 country code, e.g. `EST`.
    pub country: String,
    /// County or state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub county: Option<String>,
    /// What the address is for; `home` when absent.
    #[serde(default = "default_purpose")]
    pub purpose: AddressPurpose,
    /// Whether this is the customer's primary address.
    #[serde(default)]
    pub is_primary: bool,
}

fn default_purpose() -> AddressPurpose {
    AddressPurpose::Home
}

impl Validate for Address {
    fn validate(&self) -> Checked {
        v::text("street", &self.street, 250)?;
        v::text("city", &self.city, 60)?;
        v::postal_code("postal_code", &self.postal_code)?;
        v::country("country", &self.country)?;
        v::optional(self.county.as_deref(), |c| v::text("county", c, 60))
    }
}

/// An edit of an address.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPatch {
    /// New street.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub street: Option<String>,
    /// New city.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub city: Option<String>,
    /// New postal code.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub postal_code: Option<String>,
    /// New country.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub country: Option<String>,
    /// New county; `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub county: Option<Option<String>>,
    /// New purpose.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub purpose: Option<AddressPurpose>,
    /// New primary flag.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub is_primary: Option<bool>,
}

impl Validate for AddressPatch {
    fn validate(&self) -> Checked {
        non_empty_patch(self == &Self::default())?;
        v::optional(self.street.as_deref(), |s| v::text("street", s, 250))?;
        v::optional(self.city.as_deref(), |s| v::text("city", s, 60))?;
        v::optional(self.postal_code.as_deref(), |s| {
            v::postal_code("postal_code", s)
        })?;
        v::optional(self.country.as_deref(), |s| v::country("country", s))?;
        v::optional(self.county.as_ref().and_then(Option::as_deref), |s| {
            v::text("county", s, 60)
        })
    }
}

impl AddressPatch {
    /// Applies this edit to an address.
    pub fn apply_to(&self, a: &mut Address) {
        set(&mut a.street, &self.street);
        set(&mut a.city, &self.city);
        set(&mut a.postal_code, &self.postal_code);
        set(&mut a.country, &self.country);
        set(&mut a.county, &self.county);
        set(&mut a.purpose, &self.purpose);
        set(&mut a.is_primary, &self.is_primary);
    }
}

/// The kind of a contact detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContactKind {
    /// A phone number.
    Phone,
    /// An e-mail address.
    Email,
}

/// A contact detail of a customer (HQ table RETAILASYNCCUSTOMERCONTACT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Phone or e-mail.
    pub kind: ContactKind,
    /// The number or address, checked according to `kind`.
    pub value: String,
    /// A short label, e.g. "work".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Whether this is the primary contact of its kind.
    #[serde(default)]
    pub is_primary: bool,
}

fn contact_value(kind: ContactKind, value: &str) -> Checked {
    match kind {
        ContactKind::Phone => v::phone("value", value),
        ContactKind::Email => v::email("value", value),
    }
}

impl Validate for Contact {
    fn validate(&self) -> Checked {
        contact_value(self.kind, &self.value)?;
        v::optional(self.description.as_deref(), |d| {
            v::text("description", d, 60)
        })
    }
}

/// An edit of a contact. A new `value` is checked against the new or existing `kind` when the
/// patch is applied (see [`ContactPatch::apply_checked`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContactPatch {
    /// New kind.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub kind: Option<ContactKind>,
    /// New value.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<String>,
    /// New description; `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub description: Option<Option<String>>,
    /// New primary flag.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub is_primary: Option<bool>,
}

impl Validate for ContactPatch {
    fn validate(&self) -> Checked {
        non_empty_patch(self == &Self::default())?;
        if self.kind.is_some() && self.value.is_none() {
            return Err(FieldError::new(
                "value",
                "required_with_kind",
                "a change of kind must come with a new value",
            ));
        }
        if let (Some(kind), Some(value)) = (self.kind, self.value.as_deref()) {
            contact_value(kind, value)?;
        }
        v::optional(self.description.as_ref().and_then(Option::as_deref), |d| {
            v::text("description", d, 60)
        })
    }
}

impl ContactPatch {
    /// Applies this edit to a contact, checking a new value against the resulting kind.
    pub fn apply_checked(&self, c: &mut Contact) -> Checked {
        let mut next = c.clone();
        set(&mut next.kind, &self.kind);
        set(&mut next.value, &self.value);
        set(&mut next.description, &self.description);
        set(&mut next.is_primary, &self.is_primary);
        contact_value(next.kind, &next.value)?;
        *c = next;
        Ok(())
    }
}

/// An affiliation of a customer, e.g. a loyalty or staff affiliation
/// (HQ table RETAILASYNCCUSTOMERAFFILIATION).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Affiliation {
    /// HQ affiliation code, e.g. `LOYALTY` or `STAFF`.
    pub affiliation: String,
    /// A short description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Validate for Affiliation {
    fn validate(&self) -> Checked {
        v::code("affiliation", &self.affiliation, 30)?;
        v::optional(self.description.as_deref(), |d| {
            v::text("description", d, 60)
        })
    }
}

/// An edit of an affiliation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AffiliationPatch {
    /// New affiliation code.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub affiliation: Option<String>,
    /// New description; `null` clears it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_with::rust::double_option"
    )]
    pub description: Option<Option<String>>,
}

impl Validate for AffiliationPatch {
    fn validate(&self) -> Checked {
        non_empty_patch(self == &Self::default())?;
        v::optional(self.affiliation.as_deref(), |a| {
            v::code("affiliation", a, 30)
        })?;
        v::optional(self.description.as_ref().and_then(Option::as_deref), |d| {
            v::text("description", d, 60)
        })
    }
}

impl AffiliationPatch {
    /// Applies this edit to an affiliation.
    pub fn apply_to(&self, a: &mut Affiliation) {
        set(&mut a.affiliation, &self.affiliation);
        set(&mut a.description, &self.description);
    }
}

/// A name/value attribute of a customer (HQ table RETAILASYNCCUSTOMERATTRIBUTEV2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attribute {
    /// Attribute name, e.g. `shoe_size`.
    pub name: String,
    /// Attribute value as text.
    pub value: String,
}

impl Validate for Attribute {
    fn validate(&self) -> Checked {
        v::code("name", &self.name, 60)?;
        v::text("value", &self.value, 255)
    }
}

/// An edit of an attribute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributePatch {
    /// New name.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub name: Option<String>,
    /// New value.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub value: Option<String>,
}

impl Validate for AttributePatch {
    fn validate(&self) -> Checked {
        non_empty_patch(self == &Self::default())?;
        v::optional(self.name.as_deref(), |n| v::code("name", n, 60))?;
        v::optional(self.value.as_deref(), |s| v::text("value", s, 255))
    }
}

impl AttributePatch {
    /// Applies this edit to an attribute.
    pub fn apply_to(&self, a: &mut Attribute) {
        set(&mut a.name, &self.name);
        set(&mut a.value, &self.value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer() -> NewCustomer {
        NewCustomer {
            first_name: "Õie".into(),
            last_name: "Täht".into(),
            email: Some("oie@example.ee".into()),
            phone: None,
            customer_group: None,
            language: Some("et-EE".into()),
        }
    }

    #[test]
    fn patch_changes_only_present_fields_and_null_clears() {
        let mut c = customer();
        let patch: CustomerPatch =
            serde_json::from_str(r#"{"last_name":"Kask","email":null}"#).unwrap();
        assert!(patch.validate().is_ok());
        patch.apply_to(&mut c);
        assert_eq!(c.first_name, "Õie");
        assert_eq!(c.last_name, "Kask");
        assert_eq!(c.email, None);
        assert_eq!(c.language.as_deref(), Some("et-EE"));
    }

    #[test]
    fn null_for_a_required_field_is_a_type_error() {
        let err = serde_json::from_str::<CustomerPatch>(r#"{"first_name":null}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type: null"), "{err}");
        let err = serde_json::from_str::<AddressPatch>(r#"{"country":null}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type: null"), "{err}");
    }

    #[test]
    fn base_values_hold_the_current_values_of_changed_fields() {
        let patch: CustomerPatch =
            serde_json::from_str(r#"{"last_name":"Kask","phone":"+372 5555 1234"}"#).unwrap();
        let base = patch.base_values(&customer());
        assert_eq!(
            base,
            serde_json::json!({"last_name": "Täht", "phone": null})
        );
    }

    #[test]
    fn empty_patch_is_refused() {
        let err = CustomerPatch::default().validate().unwrap_err();
        assert_eq!((err.field.as_str(), err.rule), ("body", "non_empty_patch"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(
            serde_json::from_str::<NewCustomer>(
                r#"{"first_name":"A","last_name":"B","firstname":"x"}"#
            )
            .is_err()
        );
    }

    #[test]
    fn contact_value_follows_kind() {
        let mut c = Contact {
            kind: ContactKind::Phone,
            value: "+372 5555 1234".into(),
            description: None,
            is_primary: false,
        };
        assert!(c.validate().is_ok());
        let to_email = ContactPatch {
            value: Some("not-an-email".into()),
            ..Default::default()
        };
        assert_eq!(
            to_email.apply_checked(&mut c).unwrap_err().rule,
            "phone_format"
        );
        let ok = ContactPatch {
            kind: Some(ContactKind::Email),
            value: Some("a@b.ee".into()),
            ..Default::default()
        };
        ok.apply_checked(&mut c).unwrap();
        assert_eq!(c.kind, ContactKind::Email);
    }

    #[test]
    fn address_requires_alpha3_country() {
        let a = Address {
            street: "Narva mnt 5".into(),
            city: "Tallinn".into(),
            postal_code: "10117".into(),
            country: "EE".into(),
            county: None,
            purpose: AddressPurpose::Home,
            is_primary: true,
        };
        assert_eq!(a.validate().unwrap_err().field, "country");
    }
}
