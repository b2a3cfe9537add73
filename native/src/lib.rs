//! The prediction lane's compiled decode-and-fold (`controller.stream._native`).
//!
//! `Accumulator.add` takes the values of a group of Kafka records, decodes and validates each
//! one that is a prediction record (`prediction.served` or `prediction.batch`) and folds its
//! predictions straight into per-(deployment, cohort, version) column summaries, without making
//! a Python object per field. `Accumulator.drain` hands those summaries to Python, where
//! `CohortStats.observe_summary` records them: the result is `==` to decoding each record with
//! `schemas.fast` and folding it with `CohortStats.observe_many` (tests/property check it).
//!
//! The decoder is *sound*, not complete, exactly like `schemas.fast`: it accepts a record only
//! when `schemas.decode` would accept it with the same values, and says `None` whenever it
//! cannot vouch for one (an unusual timestamp form, an identifier with a non-ASCII end, an
//! unknown field, anything). The lane then takes that record through the Python decoders, which
//! type it or give the structured rejection for the dead-letter topic.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt;

use indexmap::IndexMap;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};
use rustc_hash::{FxBuildHasher, FxHashMap};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

type Map<K, V> = IndexMap<K, V, FxBuildHasher>;

/// Values whose magnitude exceeds this go to the Python path: the exact sum of up to 2**60 of
/// them cannot overflow, so the partials below are exact.
const MAX_MAGNITUDE: f64 = 1e290;
const MAX_IDENT: usize = 256;
const MAX_LATENCY_MS: f64 = 3_600_000.0;
const MAX_DATASCHEMA: usize = 2048;
const MAX_TRACESTATE: usize = 512;

// ---- the wire shapes (as schemas/fast.py declares them) ---------------------------------------

/// A JSON string, borrowed from the record when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// The visits of a JSON number or string that `Pred` and `Feature` share: a number (an integer
/// becomes the float msgspec and the fold make of it, correctly rounded like `as f64`) and a
/// label, borrowed from the record when it has no escapes.
macro_rules! visit_numbers_and_labels {
    ($value:ident) => {
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            Ok($value::Number(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok($value::Number(v as f64))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok($value::Number(v as f64))
        }
        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok($value::Label(Cow::Borrowed(v)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok($value::Label(Cow::Owned(v.to_owned())))
        }
    };
}

/// `float | Name | dict[str, Share]` (None is the Option around it).
enum Pred<'a> {
    Number(f64),
    Label(Cow<'a, str>),
    Scores(Vec<(Cow<'a, str>, f64)>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Pred<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Pred<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a string or a map of class scores")
            }
            visit_numbers_and_labels!(Pred);
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut scores: Vec<(Cow<'de, str>, f64)> = Vec::new();
                while let Some(Text(label)) = map.next_key::<Text<'de>>()? {
                    let score: f64 = map.next_value()?;
                    if !(0.0..=1.0).contains(&score) {
                        return Err(de::Error::custom("a class score outside [0, 1]"));
                    }
                    if scores.iter().any(|(l, _)| *l == label) {
                        return Err(de::Error::custom("a class named twice"));
                    }
                    scores.push((label, score));
                }
                Ok(Pred::Scores(scores))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `int | float | str | bool | None`; an integer is kept as the float the fold makes of it.
enum Feature<'a> {
    Number(f64),
    Label(Cow<'a, str>),
    Flag(bool),
    Missing,
}

impl<'de: 'a, 'a> Deserialize<'de> for Feature<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Feature<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a string, a boolean or null")
            }
            visit_numbers_and_labels!(Feature);
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Feature::Flag(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Feature::Missing)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `dict[str, Feature]`, in the order of the record; a name given twice is not vouched for.
struct Features<'a>(Vec<(Cow<'a, str>, Feature<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Features<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Features<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of features")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out: Vec<(Cow<'de, str>, Feature<'de>)> = Vec::new();
                while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
                    let value: Feature<'de> = map.next_value()?;
                    if out.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom("a feature named twice"));
                    }
                    out.push((name, value));
                }
                Ok(Features(out))
            }
        }
        deserializer.deserialize_map(V)
    }
}

fn yes() -> bool {
    true
}

/// A CloudEvents envelope of a prediction record. Its `data` is parsed in the same pass when
/// `type` comes first (as every producer of ours writes it), else kept raw and parsed after.
struct Envelope<'a> {
    id: Text<'a>,
    source: Text<'a>,
    time: Text<'a>,
    kind: Text<'a>,
    specversion: Text<'a>,
    subject: Option<Text<'a>>,
    datacontenttype: Text<'a>,
    dataschema: Option<Text<'a>>,
    traceparent: Option<Text<'a>>,
    tracestate: Option<Text<'a>>,
    data: Data<'a>,
}

enum Data<'a> {
    Null,
    Raw(&'a RawValue),
    Served(Item<'a>),
    Batch(Batch<'a>),
}

/// Parses an `Envelope`, knowing the two event types whose data it can parse in passing.
struct EnvelopeSeed<'c> {
    served_type: &'c str,
    batch_type: &'c str,
}

fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(name));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de, 'c> de::DeserializeSeed<'de> for EnvelopeSeed<'c> {
    type Value = Envelope<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, 'c> Visitor<'de> for EnvelopeSeed<'c> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a CloudEvents envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut id = None;
        let mut source = None;
        let mut time = None;
        let mut kind: Option<Text<'de>> = None;
        let mut specversion = None;
        let mut subject = None;
        let mut datacontenttype = None;
        let mut dataschema = None;
        let mut traceparent = None;
        let mut tracestate = None;
        let mut data: Option<Data<'de>> = None;
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_ref() {
                "id" => once(&mut id, map.next_value()?, "id")?,
                "source" => once(&mut source, map.next_value()?, "source")?,
                "time" => once(&mut time, map.next_value()?, "time")?,
                "type" => once(&mut kind, map.next_value()?, "type")?,
                "specversion" => once(&mut specversion, map.next_value()?, "specversion")?,
                "subject" => once(&mut subject, map.next_value()?, "subject")?,
                "datacontenttype" => {
                    once(&mut datacontenttype, map.next_value()?, "datacontenttype")?
                }
                "dataschema" => once(&mut dataschema, map.next_value()?, "dataschema")?,
                "traceparent" => once(&mut traceparent, map.next_value()?, "traceparent")?,
                "tracestate" => once(&mut tracestate, map.next_value()?, "tracestate")?,
                "data" => {
                    let parsed = match kind.as_ref().map(|k| k.0.as_ref()) {
                        Some(k) if k == self.served_type => {
                            map.next_value::<Option<Item>>()?.map_or(Data::Null, Data::Served)
                        }
                        Some(k) if k == self.batch_type => {
                            map.next_value::<Option<Batch>>()?.map_or(Data::Null, Data::Batch)
                        }
                        Some(_) => return Err(de::Error::custom("not a prediction record")),
                        None => map.next_value::<Option<&RawValue>>()?.map_or(Data::Null, Data::Raw),
                    };
                    once(&mut data, parsed, "data")?
                }
                _ => return Err(de::Error::custom("an unknown field")),
            }
        }
        Ok(Envelope {
            id: id.ok_or_else(|| de::Error::missing_field("id"))?,
            source: source.ok_or_else(|| de::Error::missing_field("source"))?,
            time: time.ok_or_else(|| de::Error::missing_field("time"))?,
            kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
            specversion: specversion.unwrap_or(Text(Cow::Borrowed("1.0"))),
            subject: subject.flatten(),
            datacontenttype: datacontenttype.unwrap_or(Text(Cow::Borrowed("application/json"))),
            dataschema: dataschema.flatten(),
            traceparent: traceparent.flatten(),
            tracestate: tracestate.flatten(),
            data: data.unwrap_or(Data::Null),
        })
    }
}

/// A field that may be absent, null or given: serde's `Option` cannot tell the first two apart,
/// and `schemas.fast` rejects a batch item that names its deployment even as null.
#[derive(Default)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    Given(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<T>::deserialize(deserializer)?.map_or(Field::Null, Field::Given))
    }
}

/// One prediction (`schemas.fast.Item`); the data of a `prediction.served` record adds its
/// deployment and model (`schemas.fast.Served`), which a batch item must not name.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Item<'a> {
    #[serde(borrow)]
    version: Text<'a>,
    #[serde(borrow)]
    cohort: Text<'a>,
    #[serde(borrow)]
    request_id: Text<'a>,
    #[serde(borrow)]
    event_time: Text<'a>,
    latency_ms: f64,
    #[serde(default = "yes")]
    ok: bool,
    #[serde(default, borrow)]
    error_type: Option<Text<'a>>,
    #[serde(default, borrow)]
    prediction: Option<Pred<'a>>,
    #[serde(default, borrow)]
    features: Option<Features<'a>>,
    #[serde(default, borrow)]
    user_key: Option<Text<'a>>,
    #[serde(default, borrow)]
    deployment_id: Field<Text<'a>>,
    #[serde(default, borrow)]
    model: Field<Text<'a>>,
}

impl<'a> Item<'a> {
    /// The deployment and model of a `prediction.served` record's data.
    fn served_by(&self) -> Option<(&str, &str)> {
        match (&self.deployment_id, &self.model) {
            (Field::Given(Text(d)), Field::Given(Text(m))) => Some((d, m)),
            _ => None,
        }
    }

    fn names_no_deployment(&self) -> bool {
        matches!((&self.deployment_id, &self.model), (Field::Absent, Field::Absent))
    }
}

/// The data of a `prediction.batch` record (`schemas.fast.Batch`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch<'a> {
    #[serde(borrow)]
    deployment_id: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    predictions: Vec<Item<'a>>,
}

// ---- checks ------------------------------------------------------------------------------

/// An identifier: 1 to 256 characters, no line break, and a printable ASCII character at each
/// end (so no whitespace in the sense of Python's `str.isspace`: stricter than `schemas`).
fn ident_ok(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_graphic()
                && last.is_ascii_graphic()
                && !bytes.contains(&b'\n')
                && length_ok(s, MAX_IDENT)
        }
        _ => false,
    }
}

/// 1 to `max` characters (Python counts code points, as `chars` does).
fn length_ok(s: &str, max: usize) -> bool {
    !s.is_empty() && (s.len() <= max || s.chars().count() <= max)
}

fn name_ok(s: &str) -> bool {
    length_ok(s, MAX_IDENT)
}

fn at_most(s: &str, max: usize) -> bool {
    s.len() <= max || s.chars().count() <= max
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// `^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$`, the whole string.
fn traceparent_ok(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 55
        && b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && is_lower_hex(&b[0..2])
        && is_lower_hex(&b[3..35])
        && is_lower_hex(&b[36..52])
        && is_lower_hex(&b[53..55])
}

fn digits(b: &[u8]) -> Option<i64> {
    let mut n: i64 = 0;
    for c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        n = n * 10 + i64::from(c - b'0');
    }
    Some(n)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Microseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM|-HH:MM)`, the form
/// every producer of ours writes. Any other form (which the Python decoders may still accept)
/// is not vouched for.
fn timestamp_us(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    if b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])?;
    let day = digits(&b[8..10])?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1971..=2200).contains(&year)
        || !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let mut i = 19;
    let mut micros = 0;
    if b[i] == b'.' {
        let start = i + 1;
        let mut end = start;
        while end < b.len() && b[end].is_ascii_digit() {
            end += 1;
        }
        let n = end - start;
        if n == 0 || n > 6 {
            return None;
        }
        micros = digits(&b[start..end])? * 10_i64.pow((6 - n) as u32);
        i = end;
    }
    let offset = match &b[i..] {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 || (*sign == b'-' && hours == 0 && minutes == 0) {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let seconds =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(seconds * 1_000_000 + micros)
}

fn magnitude_ok(x: f64) -> bool {
    x.abs() <= MAX_MAGNITUDE
}

/// A prediction that passed every check, as the fold needs it.
struct Row<'a> {
    cohort: Cohort,
    version: &'a str,
    event_us: i64,
    latency_ms: f64,
    ok: bool,
    error_type: Option<&'a str>,
    prediction: Option<&'a Pred<'a>>,
    features: Option<&'a Features<'a>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Cohort {
    Baseline,
    Canary,
    Shadow,
}

impl Cohort {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "baseline" => Some(Self::Baseline),
            "canary" => Some(Self::Canary),
            "shadow" => Some(Self::Shadow),
            _ => None,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Canary => "canary",
            Self::Shadow => "shadow",
        }
    }
}

/// The checks of one prediction: `Item`'s field constraints and `schemas.fast._decode`'s (ok
/// iff no error type; not after `latest_us`).
fn row<'a>(item: &'a Item<'a>, latest_us: i64) -> Option<Row<'a>> {
    let Item {
        version,
        cohort,
        request_id,
        event_time,
        latency_ms,
        ok,
        error_type,
        prediction,
        features,
        user_key,
        ..
    } = item;
    let (latency_ms, ok) = (*latency_ms, *ok);
    let cohort = Cohort::parse(&cohort.0)?;
    if !ident_ok(&version.0) || !ident_ok(&request_id.0) {
        return None;
    }
    if !(0.0..=MAX_LATENCY_MS).contains(&latency_ms) {
        return None;
    }
    let error_type = match error_type {
        Some(Text(e)) if name_ok(e) => Some(e.as_ref()),
        Some(_) => return None,
        None => None,
    };
    if ok == error_type.is_some() {
        return None;
    }
    if let Some(Text(key)) = user_key {
        if !name_ok(key) {
            return None;
        }
    }
    match prediction {
        Some(Pred::Number(x)) if !magnitude_ok(*x) => return None,
        Some(Pred::Label(label)) if !name_ok(label) => return None,
        _ => {}
    }
    if let Some(Features(fs)) = features {
        for (_, value) in fs {
            if let Feature::Number(x) = value {
                if !magnitude_ok(*x) {
                    return None;
                }
            }
        }
    }
    let event_us = timestamp_us(&event_time.0)?;
    if event_us > latest_us {
        return None;
    }
    Some(Row {
        cohort,
        version: &version.0,
        event_us,
        latency_ms,
        ok,
        error_type,
        prediction: prediction.as_ref(),
        features: features.as_ref(),
    })
}

// ---- the fold ----------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct SketchParams {
    multiplier: f64,
    min_positive: f64,
}

/// What `QuantileSketch.add_many` would record, as a summary (`QuantileSketch.add_summary`).
struct Sketch {
    count: u64,
    zero: u64,
    positive: FxHashMap<i64, u64>,
    negative: FxHashMap<i64, u64>,
    min: f64,
    max: f64,
    /// Shewchuk's partials: their exact sum is the exact sum of the values
    partials: Vec<f64>,
}

impl Sketch {
    fn new() -> Self {
        Self {
            count: 0,
            zero: 0,
            positive: FxHashMap::default(),
            negative: FxHashMap::default(),
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            partials: Vec::new(),
        }
    }

    /// `QuantileSketch.add` for a finite value: the bucket key is `ceil(log(v) * multiplier)`,
    /// with the same libm `log` Python's `math.log` calls.
    fn add(&mut self, value: f64, p: SketchParams) {
        if value > p.min_positive {
            *self.positive.entry((value.ln() * p.multiplier).ceil() as i64).or_insert(0) += 1;
        } else if value < -p.min_positive {
            *self.negative.entry(((-value).ln() * p.multiplier).ceil() as i64).or_insert(0) += 1;
        } else {
            self.zero += 1;
        }
        self.count += 1;
        if value < self.min {
            self.min = value;
        }
        if value > self.max {
            self.max = value;
        }
        // the exact running sum (the inner loop of Python's math.fsum)
        let mut x = value;
        let mut kept = 0;
        for j in 0..self.partials.len() {
            let mut y = self.partials[j];
            if x.abs() < y.abs() {
                std::mem::swap(&mut x, &mut y);
            }
            let hi = x + y;
            let lo = y - (hi - x);
            if lo != 0.0 {
                self.partials[kept] = lo;
                kept += 1;
            }
            x = hi;
        }
        self.partials.truncate(kept);
        self.partials.push(x);
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("count", self.count)?;
        out.set_item("zero", self.zero)?;
        out.set_item("positive", sorted_counts(py, &self.positive)?)?;
        out.set_item("negative", sorted_counts(py, &self.negative)?)?;
        out.set_item("min", self.min)?;
        out.set_item("max", self.max)?;
        out.set_item("partials", PyList::new(py, &self.partials)?)?;
        Ok(out)
    }
}

fn sorted_counts<'py>(
    py: Python<'py>,
    counts: &FxHashMap<i64, u64>,
) -> PyResult<Bound<'py, PyDict>> {
    let mut keys: Vec<_> = counts.iter().collect();
    keys.sort_unstable();
    let out = PyDict::new(py);
    for (key, count) in keys {
        out.set_item(key, count)?;
    }
    Ok(out)
}

fn counts_to_py<'py>(py: Python<'py>, counts: &Map<String, u64>) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, count) in counts {
        out.set_item(name, count)?;
    }
    Ok(out)
}

/// The value under `key`, a default one inserted first when there is none: one lookup, and a
/// key allocated only when it is new.
fn slot<'m, V: Default>(map: &'m mut Map<String, V>, key: &str) -> &'m mut V {
    let index = match map.get_index_of(key) {
        Some(index) => index,
        None => map.insert_full(key.to_owned(), V::default()).0,
    };
    &mut map[index]
}

fn count_in(counts: &mut Map<String, u64>, key: &str) {
    *slot(counts, key) += 1;
}

/// What `ExactCounts.add_many` would record: the count of each distinct number (keyed by its
/// bits, with -0.0 as 0.0, which Python's dict takes as one key) while there are at most
/// `max_values` of them; past that only the fact (`None` in the summary), as the whole
/// stream then has more than the cap too.
#[derive(Default)]
struct Exact {
    counts: FxHashMap<u64, u64>,
    overflowed: bool,
}

impl Exact {
    fn add(&mut self, value: f64, max_values: usize) {
        if self.overflowed {
            return;
        }
        let key = (value + 0.0).to_bits();
        if let Some(count) = self.counts.get_mut(&key) {
            *count += 1;
        } else if self.counts.len() < max_values {
            self.counts.insert(key, 1);
        } else {
            self.overflowed = true;
            self.counts = FxHashMap::default();
        }
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if self.overflowed {
            return Ok(py.None().into_bound(py));
        }
        let out = PyDict::new(py);
        for (bits, count) in &self.counts {
            out.set_item(f64::from_bits(*bits), count)?;
        }
        Ok(out.into_any())
    }
}

/// One `ValueDistribution`'s additions: numbers (a sketch and their exact counts) and
/// categories.
#[derive(Default)]
struct Distribution {
    numbers: Option<Sketch>,
    exact: Exact,
    labels: Map<String, u64>,
}

impl Distribution {
    fn number(&mut self, x: f64, p: SketchParams, max_exact_values: usize) {
        self.numbers.get_or_insert_with(Sketch::new).add(x, p);
        self.exact.add(x, max_exact_values);
    }
    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        match &self.numbers {
            Some(sketch) => out.set_item("numbers", sketch.to_py(py)?)?,
            None => out.set_item("numbers", py.None())?,
        }
        out.set_item("values", self.exact.to_py(py)?)?;
        out.set_item("labels", counts_to_py(py, &self.labels)?)?;
        Ok(out)
    }
}

fn distribution<'m>(table: &'m mut Map<String, Distribution>, name: &str) -> &'m mut Distribution {
    slot(table, name)
}

#[derive(Default)]
struct Quality {
    present: u64,
    missing: u64,
    invalid: u64,
}

/// The additions to one (cohort, version)'s `CohortStats`: see `CohortSummary` in
/// controller/core/stats/cohort.py for the shape `drain` gives them in.
struct Group {
    requests: u64,
    errors: u64,
    error_types: Map<String, u64>,
    first_us: i64,
    last_us: i64,
    latency: Sketch,
    prediction_quality: Quality,
    predictions: Map<String, Distribution>,
    feature_events: u64,
    quality: Map<String, Quality>,
    features: Map<String, Distribution>,
}

impl Group {
    fn new() -> Self {
        Self {
            requests: 0,
            errors: 0,
            error_types: Map::default(),
            first_us: i64::MAX,
            last_us: i64::MIN,
            latency: Sketch::new(),
            prediction_quality: Quality::default(),
            predictions: Map::default(),
            feature_events: 0,
            quality: Map::default(),
            features: Map::default(),
        }
    }

    /// `CohortStats.observe` of one checked row.
    fn observe(&mut self, row: &Row, cfg: &Config) {
        self.requests += 1;
        if !row.ok {
            self.errors += 1;
            count_in(&mut self.error_types, row.error_type.unwrap_or("unknown"));
        }
        self.first_us = self.first_us.min(row.event_us);
        self.last_us = self.last_us.max(row.event_us);
        self.latency.add(row.latency_ms, cfg.latency);
        match row.prediction {
            None => {
                if row.ok {
                    self.prediction_quality.missing += 1;
                }
            }
            Some(Pred::Number(x)) => {
                self.prediction_quality.present += 1;
                let exact = cfg.max_exact_values;
                distribution(&mut self.predictions, "prediction").number(*x, cfg.value, exact);
            }
            Some(Pred::Label(label)) => {
                self.prediction_quality.present += 1;
                count_in(&mut distribution(&mut self.predictions, "prediction").labels, label);
            }
            Some(Pred::Scores(scores)) => self.observe_scores(scores, cfg),
        }
        if let Some(Features(features)) = row.features {
            self.feature_events += 1;
            for (name, value) in features {
                let name: &str = name;
                let quality = slot(&mut self.quality, name);
                match value {
                    Feature::Missing => quality.missing += 1,
                    Feature::Number(x) => {
                        quality.present += 1;
                        let exact = cfg.max_exact_values;
                        distribution(&mut self.features, name).number(*x, cfg.value, exact);
                    }
                    Feature::Label(label) => {
                        quality.present += 1;
                        count_in(&mut distribution(&mut self.features, name).labels, label);
                    }
                    Feature::Flag(flag) => {
                        quality.present += 1;
                        let label = if *flag { "true" } else { "false" };
                        count_in(&mut distribution(&mut self.features, name).labels, label);
                    }
                }
            }
        }
    }

    /// Class scores: the arg-max class (ties to the greatest label) under "prediction", and
    /// each score under "prediction.<label>" when there are at most `max_class_scores`.
    fn observe_scores(&mut self, scores: &[(Cow<str>, f64)], cfg: &Config) {
        if scores.is_empty() {
            self.prediction_quality.invalid += 1;
            return;
        }
        self.prediction_quality.present += 1;
        let mut top = &scores[0];
        for entry in &scores[1..] {
            if entry.1 > top.1 || (entry.1 == top.1 && entry.0 > top.0) {
                top = entry;
            }
        }
        count_in(&mut distribution(&mut self.predictions, "prediction").labels, &top.0);
        if scores.len() <= cfg.max_class_scores {
            for (label, score) in scores {
                let name = format!("prediction.{label}");
                let exact = cfg.max_exact_values;
                distribution(&mut self.predictions, &name).number(*score, cfg.value, exact);
            }
        }
    }

    fn to_py<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        out.set_item("requests", self.requests)?;
        out.set_item("errors", self.errors)?;
        out.set_item("error_types", counts_to_py(py, &self.error_types)?)?;
        out.set_item("first_event_time", self.first_us as f64 / 1e6)?;
        out.set_item("last_event_time", self.last_us as f64 / 1e6)?;
        out.set_item("latency", self.latency.to_py(py)?)?;
        let q = &self.prediction_quality;
        out.set_item("prediction_quality", (q.present, q.missing, q.invalid))?;
        out.set_item("predictions", table_to_py(py, &self.predictions)?)?;
        out.set_item("feature_events", self.feature_events)?;
        let quality = PyDict::new(py);
        for (name, q) in &self.quality {
            quality.set_item(name, (q.present, q.missing, q.invalid))?;
        }
        out.set_item("quality", quality)?;
        out.set_item("features", table_to_py(py, &self.features)?)?;
        Ok(out)
    }
}

fn table_to_py<'py>(
    py: Python<'py>,
    table: &Map<String, Distribution>,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    for (name, d) in table {
        out.set_item(name, d.to_py(py)?)?;
    }
    Ok(out)
}

struct Deployment {
    model: String,
    count: u64,
    /// (cohort, version) in first-seen order
    groups: Map<(Cohort, String), Group>,
    /// the first and the last item its predictions came from, how many, and the newest items
    /// with trace context (`headers`): what `controller.stream.deltas.Sources` keeps
    first: Option<PyObject>,
    last: Option<PyObject>,
    items: u64,
    traced: VecDeque<PyObject>,
}

impl Deployment {
    fn group(&mut self, cohort: Cohort, version: &str) -> &mut Group {
        // look up without allocating the key for the common case (a group seen before)
        let found = self.groups.iter().position(|((c, v), _)| *c == cohort && v == version);
        let index = match found {
            Some(i) => i,
            None => {
                self.groups.insert((cohort, version.to_owned()), Group::new());
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }
}

struct Config {
    latency: SketchParams,
    value: SketchParams,
    max_class_scores: usize,
    max_exact_values: usize,
    served_type: String,
    batch_type: String,
    max_batch: usize,
    max_record_bytes: usize,
    max_traced: usize,
}

/// Decodes, validates and folds prediction records; see the module documentation.
#[pyclass(module = "controller.stream._native")]
struct Accumulator {
    config: Config,
    deployments: Map<String, Deployment>,
}

/// What a record that the accumulator vouched for carries: checked rows of one deployment.
enum Parsed<'a> {
    Served(Envelope<'a>, Item<'a>),
    Batch(Envelope<'a>, Batch<'a>),
}

impl Accumulator {
    /// Decode and check a record: its envelope and data parsed, or None.
    fn parse<'a>(&self, raw: &'a [u8], latest_us: i64) -> Option<Parsed<'a>> {
        if raw.is_empty() || raw.len() > self.config.max_record_bytes {
            return None;
        }
        let seed = EnvelopeSeed {
            served_type: &self.config.served_type,
            batch_type: &self.config.batch_type,
        };
        let mut json = serde_json::Deserializer::from_slice(raw);
        let mut envelope = de::DeserializeSeed::deserialize(seed, &mut json).ok()?;
        json.end().ok()?;
        if !ident_ok(&envelope.id.0)
            || !name_ok(&envelope.source.0)
            || envelope.specversion.0 != "1.0"
            || envelope.datacontenttype.0 != "application/json"
        {
            return None;
        }
        if let Some(Text(schema)) = &envelope.dataschema {
            if !at_most(schema, MAX_DATASCHEMA) {
                return None;
            }
        }
        if let Some(Text(state)) = &envelope.tracestate {
            if !at_most(state, MAX_TRACESTATE) {
                return None;
            }
        }
        if let Some(Text(parent)) = &envelope.traceparent {
            if !traceparent_ok(parent) {
                return None;
            }
        }
        if timestamp_us(&envelope.time.0)? > latest_us {
            return None;
        }
        let kind: &str = &envelope.kind.0;
        let data = std::mem::replace(&mut envelope.data, Data::Null);
        let parsed = match data {
            Data::Served(served) => Parsed::Served(envelope, served),
            Data::Batch(batch) => Parsed::Batch(envelope, batch),
            Data::Raw(raw) if kind == self.config.served_type => {
                Parsed::Served(envelope, serde_json::from_str(raw.get()).ok()?)
            }
            Data::Raw(raw) if kind == self.config.batch_type => {
                Parsed::Batch(envelope, serde_json::from_str(raw.get()).ok()?)
            }
            Data::Raw(_) | Data::Null => return None,
        };
        let (envelope, deployment_id, model): (_, &str, &str) = match &parsed {
            Parsed::Served(e, item) => {
                let (deployment_id, model) = item.served_by()?;
                (e, deployment_id, model)
            }
            Parsed::Batch(e, b) => (e, &b.deployment_id.0, &b.model.0),
        };
        if !ident_ok(deployment_id) || !ident_ok(model) {
            return None;
        }
        if let Some(Text(subject)) = &envelope.subject {
            if !ident_ok(subject) || subject != deployment_id {
                return None;
            }
        }
        Some(parsed)
    }

    /// Fold a record vouched for; returns the index of its deployment.
    fn fold(&mut self, parsed: &Parsed, latest_us: i64) -> Option<usize> {
        let mut rows: Vec<Row> = Vec::new();
        let (deployment_id, model): (&str, &str) = match parsed {
            Parsed::Served(_, served) => {
                rows.push(row(served, latest_us)?);
                served.served_by()?
            }
            Parsed::Batch(_, b) => {
                if b.predictions.is_empty() || b.predictions.len() > self.config.max_batch {
                    return None;
                }
                rows.reserve(b.predictions.len());
                for item in &b.predictions {
                    if !item.names_no_deployment() {
                        return None;
                    }
                    rows.push(row(item, latest_us)?);
                }
                (&b.deployment_id.0, &b.model.0)
            }
        };
        // every check passed: only now is anything recorded
        let index = match self.deployments.get_index_of(deployment_id) {
            Some(index) => index,
            None => {
                let deployment = Deployment {
                    model: model.to_owned(),
                    count: 0,
                    groups: Map::default(),
                    first: None,
                    last: None,
                    items: 0,
                    traced: VecDeque::new(),
                };
                self.deployments.insert_full(deployment_id.to_owned(), deployment).0
            }
        };
        let config = &self.config;
        let deployment = &mut self.deployments[index];
        deployment.count += rows.len() as u64;
        for r in &rows {
            deployment.group(r.cohort, r.version).observe(r, config);
        }
        Some(index)
    }
}

#[pymethods]
impl Accumulator {
    #[new]
    #[pyo3(signature = (
        *, latency_multiplier, value_multiplier, min_positive, max_class_scores,
        max_exact_values, served_type, batch_type, max_batch, max_record_bytes, max_traced
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        latency_multiplier: f64,
        value_multiplier: f64,
        min_positive: f64,
        max_class_scores: usize,
        max_exact_values: usize,
        served_type: String,
        batch_type: String,
        max_batch: usize,
        max_record_bytes: usize,
        max_traced: usize,
    ) -> Self {
        Self {
            config: Config {
                latency: SketchParams { multiplier: latency_multiplier, min_positive },
                value: SketchParams { multiplier: value_multiplier, min_positive },
                max_class_scores,
                max_exact_values,
                served_type,
                batch_type,
                max_batch,
                max_record_bytes,
                max_traced,
            },
            deployments: Map::default(),
        }
    }

    /// Decode and fold each item: a Kafka record (anything with a `value`) or a record's value
    /// (bytes or None). Returns the positions of the items the accumulator cannot vouch for
    /// (nothing of them was recorded); of the others, each deployment keeps the first and the
    /// last, their number and the newest `max_traced` with trace context (`drain`). `latest_us`: the latest time a record may carry, in
    /// microseconds since the epoch.
    fn add<'py>(
        &mut self,
        py: Python<'py>,
        items: &Bound<'py, PyList>,
        latest_us: i64,
    ) -> PyResult<Bound<'py, PyList>> {
        let refused = PyList::empty(py);
        let value_name = intern!(py, "value");
        let headers_name = intern!(py, "headers");
        for (position, item) in items.iter().enumerate() {
            let value = if item.is_instance_of::<PyBytes>() || item.is_none() {
                item.clone()
            } else {
                item.getattr(value_name)?
            };
            let folded = match value.downcast::<PyBytes>() {
                Ok(bytes) => self
                    .parse(bytes.as_bytes(), latest_us)
                    .and_then(|parsed| self.fold(&parsed, latest_us)),
                Err(_) => None,
            };
            match folded {
                Some(index) => {
                    let traced = !value.is(&item) && item.getattr(headers_name)?.is_truthy()?;
                    let deployment = &mut self.deployments[index];
                    if deployment.first.is_none() {
                        deployment.first = Some(item.clone().unbind());
                    }
                    deployment.items += 1;
                    if traced {
                        if deployment.traced.len() >= self.config.max_traced {
                            deployment.traced.pop_front();
                        }
                        deployment.traced.push_back(item.clone().unbind());
                    }
                    deployment.last = Some(item.unbind());
                }
                None => refused.append(position)?,
            }
        }
        Ok(refused)
    }

    /// Everything folded since the last drain, and forget it: one tuple per deployment,
    /// `(deployment_id, model, predictions, [(cohort, version, summary), ...],
    /// (first, last, items, traced))`.
    fn drain<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for (deployment_id, deployment) in self.deployments.drain(..) {
            let groups = PyList::empty(py);
            for ((cohort, version), group) in &deployment.groups {
                groups.append((cohort.name(), version, group.to_py(py)?))?;
            }
            let traced = PyList::new(py, deployment.traced)?;
            let sources = (deployment.first, deployment.last, deployment.items, traced);
            out.append((deployment_id, deployment.model, deployment.count, groups, sources))?;
        }
        Ok(out)
    }

    fn __len__(&self) -> usize {
        self.deployments.len()
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Accumulator>()?;
    Ok(())
}
