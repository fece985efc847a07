//! The tree of models as SVG: each model a box (id, validation accuracy, the morphisms that made
//! it from its father), fathers to the left of their children. The best model is filled; the
//! ensemble's members have a thick border. Laid out by hand: a tree is not a chart.

use std::collections::BTreeMap;
use std::fmt::Write;

/// One model as the tree shows it.
#[derive(Clone, Debug)]
pub struct TreeNode {
    pub id: usize,
    pub father: Option<usize>,
    /// The morphisms that made it from its father (empty for a generator's model).
    pub operations: Vec<String>,
    /// `None` for a model that failed.
    pub val_accuracy: Option<f64>,
}

const BOX_W: f64 = 210.0;
const BOX_H: f64 = 46.0;
const COLUMN: f64 = 250.0;
const ROW: f64 = 58.0;
const MARGIN: f64 = 8.0;
/// Characters of the morphisms' text that fit in a box; the whole text is in the box's tooltip.
const OPERATIONS_SHOWN: usize = 34;

/// Escapes text for XML and HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(max - 1).collect::<String>())
    }
}

/// Positions: a depth-first walk gives each leaf the next row, and a father the middle of its
/// children's rows. A model whose father is not among `nodes` is drawn as a root.
fn layout(nodes: &[TreeNode]) -> BTreeMap<usize, (usize, f64)> {
    let ids: std::collections::HashSet<usize> = nodes.iter().map(|n| n.id).collect();
    let mut children: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
    for n in nodes {
        let father = n.father.filter(|f| ids.contains(f) && *f != n.id);
        children.entry(father).or_default().push(n.id);
    }
    for list in children.values_mut() {
        list.sort_unstable();
    }
    let mut place = BTreeMap::new();
    let mut next_row = 0.0;
    // An explicit stack: (id, depth, children visited yet).
    for &root in children.get(&None).map(|v| v.as_slice()).unwrap_or(&[]) {
        let mut stack = vec![(root, 0usize, false)];
        while let Some((id, depth, visited)) = stack.pop() {
            let kids = children.get(&Some(id)).map(|v| v.as_slice()).unwrap_or(&[]);
            if kids.is_empty() {
                place.insert(id, (depth, next_row));
                next_row += 1.0;
            } else if visited {
                let rows: Vec<f64> = kids.iter().filter_map(|k| place.get(k).map(|p: &(usize, f64)| p.1)).collect();
                let row =
                    (rows.iter().cloned().fold(f64::INFINITY, f64::min) + rows.iter().cloned().fold(f64::NEG_INFINITY, f64::max)) / 2.0;
                place.insert(id, (depth, row));
            } else {
                stack.push((id, depth, true));
                for &k in kids.iter().rev() {
                    if !place.contains_key(&k) {
                        stack.push((k, depth + 1, false));
                    }
                }
            }
        }
    }
    place
}

/// The tree as an SVG element; `best` is filled, `ensemble` members get a thick border.
pub fn model_tree(nodes: &[TreeNode], best: Option<usize>, ensemble: &[usize]) -> String {
    let place = layout(nodes);
    let depth = place.values().map(|p| p.0).max().unwrap_or(0);
    let rows = place.values().map(|p| p.1).fold(0.0f64, f64::max) + 1.0;
    let (width, height) = (MARGIN * 2.0 + depth as f64 * COLUMN + BOX_W, MARGIN * 2.0 + rows * ROW);
    let at = |id: usize| place.get(&id).map(|&(d, r)| (MARGIN + d as f64 * COLUMN, MARGIN + r * ROW));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" role="img" aria-label="tree of models">"#
    );
    for n in nodes {
        if let (Some(father), Some((x, y))) = (n.father, at(n.id)) {
            if let Some((fx, fy)) = at(father) {
                let _ = write!(
                    svg,
                    r##"<path d="M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}" fill="none" stroke="#999" stroke-width="1.5"/>"##,
                    fx + BOX_W,
                    fy + BOX_H / 2.0,
                    fx + BOX_W + 20.0,
                    fy + BOX_H / 2.0,
                    x - 20.0,
                    y + BOX_H / 2.0,
                    x,
                    y + BOX_H / 2.0
                );
            }
        }
    }
    for n in nodes {
        let Some((x, y)) = at(n.id) else { continue };
        let is_best = best == Some(n.id);
        let (fill, text_fill) = match (is_best, n.val_accuracy) {
            (true, _) => ("#ff7f0e", "#fff"),
            (false, Some(_)) => ("#eef4fa", "#111"),
            (false, None) => ("#f4e4e4", "#733"),
        };
        let border = if ensemble.contains(&n.id) { 3.5 } else { 1.0 };
        let figure = n.val_accuracy.map_or("failed".to_string(), |a| format!("{a:.4}"));
        let operations = if n.operations.is_empty() { "generator".to_string() } else { n.operations.join(", ") };
        let _ = write!(
            svg,
            r##"<g><title>{title}</title><rect x="{x:.1}" y="{y:.1}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="#1f77b4" stroke-width="{border}"/><text x="{tx:.1}" y="{ty1:.1}" font-size="13" font-weight="bold" fill="{text_fill}">model {id} · {figure}</text><text x="{tx:.1}" y="{ty2:.1}" font-size="11" fill="{text_fill}">{ops}</text></g>"##,
            title = escape(&format!("model {}: {}", n.id, operations)),
            tx = x + 8.0,
            ty1 = y + 18.0,
            ty2 = y + 36.0,
            id = n.id,
            ops = escape(&shorten(&operations, OPERATIONS_SHOWN)),
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: usize, father: Option<usize>, acc: Option<f64>) -> TreeNode {
        TreeNode { id, father, operations: father.map(|f| vec![format!("deeper after {f}")]).unwrap_or_default(), val_accuracy: acc }
    }

    #[test]
    fn fathers_sit_left_of_and_between_their_children() {
        let nodes = [node(0, None, Some(0.9)), node(1, Some(0), Some(0.92)), node(2, Some(0), None), node(3, Some(1), Some(0.95))];
        let place = layout(&nodes);
        assert_eq!(place[&0].0, 0);
        assert_eq!((place[&1].0, place[&3].0), (1, 2));
        assert_eq!(place[&3].1, 0.0);
        assert_eq!(place[&2].1, 1.0);
        assert_eq!(place[&0].1, 0.5, "between its children's rows");
    }

    #[test]
    fn the_svg_holds_every_model_the_edges_and_escaped_text() {
        let mut nodes = vec![node(0, None, Some(0.9)), node(1, Some(0), Some(0.92)), node(5, Some(9), Some(0.5))];
        nodes[1].operations = vec!["concat skip 1→4 <x>".into()];
        let svg = model_tree(&nodes, Some(1), &[0, 1]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert_eq!(svg.matches("<rect").count(), 3, "a model whose father is unknown is a root");
        assert_eq!(svg.matches("<path").count(), 1);
        assert!(svg.contains("&lt;x&gt;") && !svg.contains("<x>"));
        assert!(svg.contains("model 1 · 0.9200") && svg.contains("#ff7f0e"));
    }

    #[test]
    fn long_operations_are_shortened_in_the_box_and_whole_in_the_tooltip() {
        let mut n = node(1, Some(0), Some(0.9));
        n.operations = vec!["a".repeat(80)];
        let svg = model_tree(&[node(0, None, Some(0.8)), n], None, &[]);
        assert!(svg.contains(&format!("{}…", "a".repeat(OPERATIONS_SHOWN - 1))));
        assert!(svg.contains(&"a".repeat(80)));
    }
}
