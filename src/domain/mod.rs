//! Domain: typed values parsed at the edge, no I/O. The core never re-validates strings.

mod allow_list;
mod duration;
mod event;
mod group;
mod opt_out;
mod phone;
mod rate;
mod schedule;
mod storable;
mod template;

pub use allow_list::{HttpAllowList, InvalidAllowEntry, inside_address};
pub use duration::HumanDuration;
pub use event::{CloudEvent, EventType, UnknownEventType};
pub use group::{GroupName, InvalidGroupName};
pub use opt_out::{OptOutChange, OptOutKeywords};
pub use phone::{InvalidPhoneNumber, PhoneNumber};
pub use rate::Rate;
pub use schedule::{CronExpr, TimeZone};
pub use storable::{ESCAPED_NUL, escape_nuls, escape_nuls_in};
pub use template::{LanguageCode, TemplateCategory, TemplateName, TemplateStatus};

/// Implements `JsonSchema` for a newtype that is written as a string.
#[macro_export]
macro_rules! string_schema {
    ($t:ty) => {
        impl schemars::JsonSchema for $t {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($t).into()
            }
            fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                <String as schemars::JsonSchema>::json_schema(generator)
            }
        }
    };
}
