//! Reading what a vision-language model answered.
//!
//! Models wrap JSON in code fences, put prose before and after it, leave trailing commas, quote
//! with `'`, answer "Image 2" instead of `1`, or give coordinates normalised to [0, 1] or to
//! [0, 1000] instead of pixels. Everything here takes the raw answer text and either returns a
//! value that passed every check or a [`ParseError`] saying what was wrong; nothing is guessed
//! into a label the answer did not give.

use serde_json::Value;

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// No JSON value with the expected fields anywhere in the answer.
    #[error("no JSON object with `{0}` in the answer")]
    NoJson(&'static str),
    /// A field is missing or has the wrong shape.
    #[error("field `{field}`: {message}")]
    Field {
        /// Path of the field, e.g. `waypoints[2]`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The model said it cannot tell.
    #[error("the answer is unsure")]
    Unsure,
    /// No label could be read.
    #[error("no label in the answer")]
    NoLabel,
}

fn field(field: impl Into<String>, message: impl Into<String>) -> ParseError {
    ParseError::Field {
        field: field.into(),
        message: message.into(),
    }
}

/// Every top-level JSON object or array in `text`, in order of appearance, after light repairs
/// (code fences, trailing commas, single quotes, `//` comments).
pub fn json_values(text: &str) -> Vec<Value> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'{' || c == b'[' {
            if let Some(end) = matching_close(bytes, i) {
                let span = &text[i..=end];
                if let Some(v) = parse_repaired(span) {
                    out.push(v);
                    i = end + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    out
}

/// The last JSON object in `text` that has the key `key` (answers often restate an example
/// before the real answer, so the last one wins).
pub fn json_with(text: &str, key: &'static str) -> Result<Value, ParseError> {
    json_values(text)
        .into_iter()
        .rev()
        .find(|v| v.get(key).is_some())
        .ok_or(ParseError::NoJson(key))
}

/// Index of the bracket closing the one at `open`, skipping strings (either quote).
fn matching_close(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<u8> = None;
    let mut escaped = false;
    for (k, &c) in b.iter().enumerate().skip(open) {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == b'\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            b'"' | b'\'' if k > open => quote = Some(c),
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(k);
                }
            }
            _ => {}
        }
    }
    None
}

fn parse_repaired(span: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str(span) {
        return Some(v);
    }
    let mut s = strip_line_comments(span);
    if !s.contains('"') {
        s = s.replace('\'', "\"");
    }
    s = drop_trailing_commas(&s);
    serde_json::from_str(&s).ok()
}

fn strip_line_comments(s: &str) -> String {
    s.lines()
        .map(|l| match l.find("//") {
            // Keep URLs ("http://") inside strings: only cut when no quote follows.
            Some(k) if !l[k..].contains('"') => &l[..k],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn drop_trailing_commas(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let chars: Vec<char> = s.chars().collect();
    for (k, &c) in chars.iter().enumerate() {
        if c == ',' {
            let next = chars[k + 1..].iter().find(|c| !c.is_whitespace());
            if matches!(next, Some('}') | Some(']')) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// A 2D point in pixel coordinates of the image the model saw (x right, y down).
pub type Pixel = [f64; 2];

/// The grid drawn over the image sent for keypoint proposal: `cols` x `rows` cells, columns
/// lettered from `A`, rows numbered from 1; a model may name a cell (`"C4"`) instead of giving
/// coordinates.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grid {
    /// Image width, pixels.
    pub width: usize,
    /// Image height, pixels.
    pub height: usize,
    /// Cells across (at most 26).
    pub cols: usize,
    /// Cells down.
    pub rows: usize,
}

impl Grid {
    /// Centre of the cell named like `"C4"` (case-insensitive), if it exists.
    pub fn cell_centre(&self, label: &str) -> Option<Pixel> {
        let label = label.trim();
        let mut chars = label.chars();
        let col = chars.next()?.to_ascii_uppercase();
        if !col.is_ascii_uppercase() {
            return None;
        }
        let c = (col as u8 - b'A') as usize;
        let r: usize = chars.as_str().trim().parse().ok()?;
        if c >= self.cols || r == 0 || r > self.rows {
            return None;
        }
        let cw = self.width as f64 / self.cols as f64;
        let ch = self.height as f64 / self.rows as f64;
        Some([(c as f64 + 0.5) * cw, (r as f64 - 0.5) * ch])
    }

    /// The label of the cell holding pixel `p`.
    pub fn cell_of(&self, p: Pixel) -> String {
        let c = ((p[0] / self.width as f64 * self.cols as f64) as usize).min(self.cols - 1);
        let r = ((p[1] / self.height as f64 * self.rows as f64) as usize).min(self.rows - 1);
        format!("{}{}", (b'A' + c as u8) as char, r + 1)
    }
}

/// What a keypoint proposal answered: where to grasp, then where to carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct KeypointAnswer {
    /// The affordance point on the object.
    pub affordance: Pixel,
    /// Waypoints from the object towards the goal, in order (may be empty).
    pub waypoints: Vec<Pixel>,
}

/// How coordinates in an answer were written.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scale {
    Pixels,
    /// Every coordinate in [0, 1].
    Unit,
    /// Every coordinate in [0, 1000] and the image is smaller (a common VLM convention).
    Thousand,
}

/// Reads a keypoint proposal: `{"affordance": P, "waypoints": [P, ...]}` where each P is
/// `[x, y]`, `{"x": .., "y": ..}` or a grid cell like `"C4"`; coordinates may be pixels,
/// fractions of the image or thousandths of it. Points outside the image are refused.
/// An answer that offers two different proposals and hedges between them ("either ... or
/// ...", "not sure") is [`ParseError::Unsure`]: picking one of them would be a guess.
pub fn parse_keypoints(text: &str, grid: &Grid) -> Result<KeypointAnswer, ParseError> {
    let v = json_with(text, "affordance")?;
    let proposals: Vec<Value> = json_values(text)
        .into_iter()
        .filter(|p| p.get("affordance").is_some())
        .collect();
    if proposals.iter().any(|p| p["affordance"] != v["affordance"]) && hedges(text) {
        return Err(ParseError::Unsure);
    }
    let raw_aff = read_point(&v["affordance"], "affordance", grid)?;
    let mut raw_way = Vec::new();
    match v.get("waypoints") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (k, p) in a.iter().enumerate() {
                raw_way.push(read_point(p, &format!("waypoints[{k}]"), grid)?);
            }
        }
        Some(_) => return Err(field("waypoints", "must be a list of points")),
    }
    // One convention for the whole answer, decided from every numeric coordinate in it.
    let numeric: Vec<f64> = std::iter::once(&raw_aff)
        .chain(&raw_way)
        .filter(|p| !p.1)
        .flat_map(|p| p.0)
        .collect();
    let scale = if numeric.is_empty() || numeric.iter().any(|c| *c > 1000.0) {
        Scale::Pixels
    } else if numeric.iter().all(|c| *c <= 1.0) && grid.width.min(grid.height) > 2 {
        Scale::Unit
    } else if numeric
        .iter()
        .any(|c| *c > grid.width.max(grid.height) as f64)
    {
        Scale::Thousand
    } else {
        Scale::Pixels
    };
    let convert = |(p, from_grid): &(Pixel, bool), name: &str| -> Result<Pixel, ParseError> {
        let q = match (from_grid, scale) {
            (true, _) | (false, Scale::Pixels) => *p,
            (false, Scale::Unit) => [p[0] * grid.width as f64, p[1] * grid.height as f64],
            (false, Scale::Thousand) => [
                p[0] / 1000.0 * grid.width as f64,
                p[1] / 1000.0 * grid.height as f64,
            ],
        };
        if !(0.0..=grid.width as f64).contains(&q[0]) || !(0.0..=grid.height as f64).contains(&q[1])
        {
            return Err(field(
                name,
                format!(
                    "({:.1}, {:.1}) is outside the {}x{} image",
                    q[0], q[1], grid.width, grid.height
                ),
            ));
        }
        Ok(q)
    };
    Ok(KeypointAnswer {
        affordance: convert(&raw_aff, "affordance")?,
        waypoints: raw_way
            .iter()
            .enumerate()
            .map(|(k, p)| convert(p, &format!("waypoints[{k}]")))
            .collect::<Result<_, _>>()?,
    })
}

/// Whether `text` hedges: words a model uses when it is not committing to one answer.
fn hedges(text: &str) -> bool {
    const HEDGES: [&str; 9] = [
        "either",
        "alternatively",
        "not sure",
        "unsure",
        "uncertain",
        "cannot tell",
        "can't tell",
        "possibly",
        "hard to tell",
    ];
    let low = text.to_ascii_lowercase();
    HEDGES.iter().any(|h| low.contains(h))
}

/// A point as written, and whether it came from a grid cell (already in pixels).
fn read_point(v: &Value, name: &str, grid: &Grid) -> Result<(Pixel, bool), ParseError> {
    let num = |v: &Value, what: &str| -> Result<f64, ParseError> {
        let x = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match x {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(field(
                format!("{name}.{what}"),
                format!("`{v}` is not a number"),
            )),
        }
    };
    match v {
        Value::Array(a) if a.len() == 2 => Ok(([num(&a[0], "x")?, num(&a[1], "y")?], false)),
        Value::Array(a) => Err(field(
            name,
            format!("a point has 2 coordinates, this one has {}", a.len()),
        )),
        Value::Object(o) => match (o.get("x"), o.get("y")) {
            (Some(x), Some(y)) => Ok(([num(x, "x")?, num(y, "y")?], false)),
            _ => match o.get("cell").or_else(|| o.get("grid")) {
                Some(Value::String(s)) => cell(s, name, grid),
                _ => Err(field(name, "a point needs `x` and `y` (or `cell`)")),
            },
        },
        Value::String(s) => cell(s, name, grid),
        Value::Null => Err(field(name, "missing")),
        other => Err(field(name, format!("`{other}` is not a point"))),
    }
}

fn cell(s: &str, name: &str, grid: &Grid) -> Result<(Pixel, bool), ParseError> {
    grid.cell_centre(s).map(|p| (p, true)).ok_or_else(|| {
        field(
            name,
            format!(
                "`{s}` is not a cell of the {}x{} grid (A1..{}{})",
                grid.cols,
                grid.rows,
                (b'A' + grid.cols as u8 - 1) as char,
                grid.rows
            ),
        )
    })
}

/// Which of two frames shows more progress on the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preference {
    /// The first frame (label 0).
    First,
    /// The second frame (label 1).
    Second,
}

/// Reads a preference label: `{"label": 0|1|-1}` if there is one, else the last line that is
/// (or ends in) a bare `0`, `1` or `-1`, else a closing phrase naming "image 1" or "image 2".
/// `-1` (unsure) is [`ParseError::Unsure`].
pub fn parse_preference(text: &str) -> Result<Preference, ParseError> {
    let from_int = |k: i64| match k {
        0 => Ok(Preference::First),
        1 => Ok(Preference::Second),
        -1 => Err(ParseError::Unsure),
        _ => Err(field("label", format!("{k} is not 0, 1 or -1"))),
    };
    if let Ok(v) = json_with(text, "label") {
        return match &v["label"] {
            Value::Number(n) => from_int(n.as_i64().ok_or(ParseError::NoLabel)?),
            Value::String(s) => from_int(s.trim().parse().map_err(|_| ParseError::NoLabel)?),
            _ => Err(field("label", "must be 0, 1 or -1")),
        };
    }
    for line in text.lines().rev() {
        let l = line
            .trim()
            .trim_matches(|c: char| c == '*' || c == '`' || c == '.' || c == '"');
        if l.is_empty() {
            continue;
        }
        // "Answer: 1", "Label: -1", "1".
        let tail = l.rsplit([':', ' ']).next().unwrap_or(l).trim();
        if let Ok(k) = tail.parse::<i64>() {
            if (-1..=1).contains(&k) && l.len() <= 40 {
                return from_int(k);
            }
        }
        let low = l.to_ascii_lowercase();
        if low.contains("unsure") || low.contains("cannot tell") || low.contains("can't tell") {
            return Err(ParseError::Unsure);
        }
        let one = low.contains("image 1") || low.contains("first image");
        let two = low.contains("image 2") || low.contains("second image");
        if one != two && (low.contains("better") || low.contains("answer") || low.contains("more"))
        {
            return Ok(if one {
                Preference::First
            } else {
                Preference::Second
            });
        }
    }
    Err(ParseError::NoLabel)
}

/// Reads a success judgement: `{"success": true|false|"yes"|"no"}`, else a first or last word
/// "yes"/"no".
pub fn parse_success(text: &str) -> Result<bool, ParseError> {
    let word = |s: &str| match s
        .trim()
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_ascii_lowercase()
        .as_str()
    {
        "yes" | "true" | "success" | "succeeded" => Some(true),
        "no" | "false" | "failure" | "failed" => Some(false),
        _ => None,
    };
    if let Ok(v) = json_with(text, "success") {
        return match &v["success"] {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => word(s).ok_or_else(|| field("success", format!("`{s}`"))),
            other => Err(field("success", format!("`{other}` is not yes or no"))),
        };
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let first = words.first().and_then(|w| word(w));
    let last = words.last().and_then(|w| word(w));
    match (first, last) {
        (Some(a), Some(b)) if a != b => Err(ParseError::NoLabel),
        (Some(a), _) | (None, Some(a)) => Ok(a),
        (None, None) => Err(ParseError::NoLabel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRID: Grid = Grid {
        width: 128,
        height: 96,
        cols: 8,
        rows: 6,
    };

    /// Two different proposals with a hedge are not a proposal; a restated format example
    /// before the answer is (the last one wins), and so is one proposal said with doubt.
    #[test]
    fn a_hedged_keypoint_answer_is_unsure() {
        let t = "I am not sure. The grasp point is either {\"affordance\": [10, 20]} or \
                 {\"affordance\": [50, 60]}.";
        assert_eq!(parse_keypoints(t, &GRID), Err(ParseError::Unsure));
        let t = "Format: {\"affordance\": [0, 0]}. Answer: {\"affordance\": [64, 48]}";
        assert_eq!(parse_keypoints(t, &GRID).unwrap().affordance, [64.0, 48.0]);
        let t = "Possibly here: {\"affordance\": [64, 48]}";
        assert_eq!(parse_keypoints(t, &GRID).unwrap().affordance, [64.0, 48.0]);
    }

    #[test]
    fn json_is_found_in_fences_and_prose_and_repaired() {
        let t = "Sure! Here it is:\n```json\n{\"affordance\": [10, 20], \"waypoints\": [[30, 40],],}\n```\nHope that helps.";
        let k = parse_keypoints(t, &GRID).unwrap();
        assert_eq!(k.affordance, [10.0, 20.0]);
        assert_eq!(k.waypoints, vec![[30.0, 40.0]]);
        let t = "{'affordance': {'x': 5, 'y': 6}} // the handle";
        assert_eq!(parse_keypoints(t, &GRID).unwrap().affordance, [5.0, 6.0]);
    }

    #[test]
    fn the_last_matching_object_wins() {
        let t = "Format: {\"affordance\": [0, 0]}. Answer: {\"affordance\": [64, 48]}";
        assert_eq!(parse_keypoints(t, &GRID).unwrap().affordance, [64.0, 48.0]);
    }

    #[test]
    fn coordinate_conventions_are_recognised() {
        let unit = "{\"affordance\": [0.5, 0.25], \"waypoints\": [[1.0, 0.0]]}";
        let k = parse_keypoints(unit, &GRID).unwrap();
        assert_eq!(k.affordance, [64.0, 24.0]);
        assert_eq!(k.waypoints[0], [128.0, 0.0]);
        let thousand = "{\"affordance\": [500, 250]}";
        assert_eq!(
            parse_keypoints(thousand, &GRID).unwrap().affordance,
            [64.0, 24.0]
        );
        let cells = "{\"affordance\": \"B2\", \"waypoints\": [{\"cell\": \"h6\"}]}";
        let k = parse_keypoints(cells, &GRID).unwrap();
        assert_eq!(k.affordance, [24.0, 24.0]);
        assert_eq!(k.waypoints[0], [120.0, 88.0]);
        assert_eq!(GRID.cell_of([24.0, 24.0]), "B2");
    }

    #[test]
    fn bad_points_name_their_field() {
        let e = parse_keypoints("{\"affordance\": [1, 2, 3]}", &GRID).unwrap_err();
        assert!(e.to_string().contains("affordance"), "{e}");
        let e = parse_keypoints(
            "{\"affordance\": [3, 4], \"waypoints\": [[3, 4], \"Z9\"]}",
            &GRID,
        )
        .unwrap_err();
        assert!(e.to_string().contains("waypoints[1]"), "{e}");
        let e = parse_keypoints("{\"affordance\": [-5, 4]}", &GRID).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert_eq!(
            parse_keypoints("I cannot see a cube.", &GRID),
            Err(ParseError::NoJson("affordance"))
        );
    }

    #[test]
    fn preference_labels() {
        assert_eq!(parse_preference("{\"label\": 1}"), Ok(Preference::Second));
        assert_eq!(
            parse_preference("The gripper is closer in image 1.\nAnswer: 0"),
            Ok(Preference::First)
        );
        assert_eq!(
            parse_preference("Hard to say.\n-1"),
            Err(ParseError::Unsure)
        );
        assert_eq!(
            parse_preference("Image 2 shows the cube lifted higher, so image 2 is better."),
            Ok(Preference::Second)
        );
        assert_eq!(
            parse_preference("Both look the same."),
            Err(ParseError::NoLabel)
        );
        assert!(parse_preference("{\"label\": 7}").is_err());
    }

    #[test]
    fn success_judgements() {
        assert_eq!(parse_success("Yes. The cube is in the air."), Ok(true));
        assert_eq!(
            parse_success("The cube is still on the table. No"),
            Ok(false)
        );
        assert_eq!(
            parse_success("```json\n{\"success\": \"no\"}\n```"),
            Ok(false)
        );
        assert_eq!(parse_success("Yes and no"), Err(ParseError::NoLabel));
        assert_eq!(parse_success("maybe"), Err(ParseError::NoLabel));
    }
}
