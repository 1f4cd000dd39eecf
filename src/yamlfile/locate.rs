//! Finds where a field sits in a YAML file's text (a plan, a sinks file), so that a
//! validation error found after parsing (waves not increasing, a selector that
//! matches nothing) can still point at a line and column.
//!
//! serde_yaml keeps no positions once a document is parsed, so this walks the text
//! itself. It understands what people write in plans: block mappings, block
//! sequences and one-line flow sequences (`[1%, 10%]`). When a path cannot be
//! followed to the end, the deepest part found is returned, which still puts the
//! reader on the right block.

/// One step of a field path: `on_failure.max_failed`, `waves[2]`.
#[derive(Debug, PartialEq)]
enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(path: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !key.is_empty() {
            out.push(Segment::Key(key));
        }
        while let Some(stripped) = rest.strip_prefix('[') {
            let Some(end) = stripped.find(']') else { break };
            if let Ok(i) = stripped[..end].parse() {
                out.push(Segment::Index(i));
            }
            rest = &stripped[end + 1..];
        }
    }
    out
}

/// A line of the document with its indentation, ignoring blank and comment lines.
struct Line<'a> {
    number: usize,
    indent: usize,
    text: &'a str,
}

fn lines(text: &str) -> Vec<Line<'_>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed == "---" {
                return None;
            }
            Some(Line {
                number: i + 1,
                indent: raw.len() - trimmed.len(),
                text: raw,
            })
        })
        .collect()
}

/// Returns the 1-based line and column of `path` in `text`, or of its deepest
/// ancestor that can be found.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    let lines = lines(text);
    let segs = segments(path);
    let mut found: Option<(usize, usize)> = None;
    // The block we search in: lines[start..end], children indented more than `parent_indent`.
    let (mut start, mut end) = (0usize, lines.len());
    let mut parent_indent: Option<usize> = None;
    // After a key, the column right after `key:` (for flow values on the same line).
    let mut value_col: Option<(usize, usize)> = None;
    for seg in segs {
        match seg {
            Segment::Key(key) => {
                let hit = (start..end).find(|&i| {
                    let l = &lines[i];
                    let within = parent_indent.is_none_or(|p| l.indent > p);
                    let body = l.text[l.indent..].trim_start_matches("- ");
                    within && (body.starts_with(&format!("{key}:")))
                });
                let Some(i) = hit else { return found };
                let l = &lines[i];
                let key_col = l.text.find(&format!("{key}:")).unwrap_or(l.indent);
                found = Some((l.number, key_col + 1));
                value_col = Some((i, key_col + key.len() + 1));
                // The key's block: following lines indented more than the key.
                let key_indent = key_col;
                let block_end = (i + 1..end)
                    .find(|&j| lines[j].indent <= key_indent && !is_seq_item_of(&lines[j], key_indent))
                    .unwrap_or(end);
                start = i + 1;
                end = block_end;
                parent_indent = Some(key_indent);
            }
            Segment::Index(n) => {
                // Flow sequence on the key's line: `waves: [1%, 10%]`.
                if let Some((li, col)) = value_col {
                    let l = &lines[li];
                    let rest = &l.text[col.min(l.text.len())..];
                    if let Some(open) = rest.find('[') {
                        let mut pos = col + open + 1;
                        let items = rest[open + 1..].split(',');
                        for (k, item) in items.enumerate() {
                            if k == n {
                                let lead = item.len() - item.trim_start().len();
                                found = Some((l.number, pos + lead + 1));
                                return found;
                            }
                            pos += item.len() + 1;
                        }
                        return found;
                    }
                }
                // Block sequence: the n-th `- ` line directly in the block.
                let items: Vec<usize> = (start..end)
                    .filter(|&i| lines[i].text[lines[i].indent..].starts_with('-'))
                    .collect();
                let first_indent = items.first().map(|&i| lines[i].indent);
                let items: Vec<usize> = items
                    .into_iter()
                    .filter(|&i| Some(lines[i].indent) == first_indent)
                    .collect();
                let Some(&i) = items.get(n) else { return found };
                let l = &lines[i];
                found = Some((l.number, l.indent + 3));
                let next = items.get(n + 1).copied().unwrap_or(end);
                start = i;
                end = next;
                parent_indent = Some(l.indent);
                value_col = None;
            }
        }
    }
    found
}

/// YAML allows a key's sequence items at the key's own indentation (`waves:\n- 1%`).
fn is_seq_item_of(line: &Line<'_>, key_indent: usize) -> bool {
    line.indent == key_indent && line.text[line.indent..].starts_with("- ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = "\
# a comment
name: exo-retry-fix
kind: fix
selector:
  service: exchange-routing
  region: [apac, emea]
waves: [1%, 10%, 30%]
on_failure:
  max_failed: 2%
  action: halt
other:
  - 1%
  - 5%
";

    #[test]
    fn finds_top_level_and_nested_keys() {
        assert_eq!(locate(PLAN, "kind"), Some((3, 1)));
        assert_eq!(locate(PLAN, "on_failure.max_failed"), Some((9, 3)));
        assert_eq!(locate(PLAN, "selector.region"), Some((6, 3)));
    }

    #[test]
    fn finds_items_of_flow_and_block_sequences() {
        assert_eq!(locate(PLAN, "waves[0]"), Some((7, 9)));
        assert_eq!(locate(PLAN, "waves[2]"), Some((7, 18)));
        assert_eq!(locate(PLAN, "other[1]"), Some((13, 5)));
    }

    #[test]
    fn falls_back_to_the_deepest_known_part() {
        assert_eq!(locate(PLAN, "on_failure.nope"), Some((8, 1)));
        assert_eq!(locate(PLAN, "missing"), None);
    }
}
