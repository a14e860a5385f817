//! Drawing the answer grid on a frame before it goes to a VLM: one-pixel lines between cells
//! and each cell's label (`A1`, `B1`, ...) in its top-left corner, so a model can name a cell
//! when it cannot give coordinates (see [`crate::parse::Grid`]).

use crate::parse::Grid;

/// Colour of lines and labels (bright yellow: rare in the scenes, readable on any of them).
pub const GRID_RGB: [u8; 3] = [255, 230, 0];

/// 3x5 glyphs for `0-9` then `A-Z`, one row of three pixels per string.
const GLYPHS: [[&str; 5]; 36] = [
    ["###", "#.#", "#.#", "#.#", "###"],
    [".#.", "##.", ".#.", ".#.", "###"],
    ["###", "..#", "###", "#..", "###"],
    ["###", "..#", "###", "..#", "###"],
    ["#.#", "#.#", "###", "..#", "..#"],
    ["###", "#..", "###", "..#", "###"],
    ["###", "#..", "###", "#.#", "###"],
    ["###", "..#", "..#", "..#", "..#"],
    ["###", "#.#", "###", "#.#", "###"],
    ["###", "#.#", "###", "..#", "###"],
    [".#.", "#.#", "###", "#.#", "#.#"],
    ["##.", "#.#", "##.", "#.#", "##."],
    [".##", "#..", "#..", "#..", ".##"],
    ["##.", "#.#", "#.#", "#.#", "##."],
    ["###", "#..", "##.", "#..", "###"],
    ["###", "#..", "##.", "#..", "#.."],
    [".##", "#..", "#.#", "#.#", ".##"],
    ["#.#", "#.#", "###", "#.#", "#.#"],
    ["###", ".#.", ".#.", ".#.", "###"],
    ["..#", "..#", "..#", "#.#", ".#."],
    ["#.#", "#.#", "##.", "#.#", "#.#"],
    ["#..", "#..", "#..", "#..", "###"],
    ["#.#", "###", "###", "#.#", "#.#"],
    ["##.", "#.#", "#.#", "#.#", "#.#"],
    [".#.", "#.#", "#.#", "#.#", ".#."],
    ["##.", "#.#", "##.", "#..", "#.."],
    [".#.", "#.#", "#.#", "##.", ".##"],
    ["##.", "#.#", "##.", "#.#", "#.#"],
    [".##", "#..", ".#.", "..#", "##."],
    ["###", ".#.", ".#.", ".#.", ".#."],
    ["#.#", "#.#", "#.#", "#.#", "###"],
    ["#.#", "#.#", "#.#", "#.#", ".#."],
    ["#.#", "#.#", "###", "###", "#.#"],
    ["#.#", "#.#", ".#.", "#.#", "#.#"],
    ["#.#", "#.#", ".#.", ".#.", ".#."],
    ["###", "..#", ".#.", "#..", "###"],
];

fn glyph(c: char) -> Option<&'static [&'static str; 5]> {
    match c {
        '0'..='9' => Some(&GLYPHS[c as usize - '0' as usize]),
        'A'..='Z' => Some(&GLYPHS[10 + c as usize - 'A' as usize]),
        _ => None,
    }
}

/// Left edge of column `c` (or right edge of the image for `c == cols`), pixels.
fn edge(size: usize, cells: usize, c: usize) -> usize {
    c * size / cells.max(1)
}

/// Draws `grid` on an RGB image of `grid.width x grid.height` (3 bytes per pixel, row-major).
/// Images of another size are left alone.
pub fn draw_grid(rgb: &mut [u8], grid: &Grid) {
    let (w, h) = (grid.width, grid.height);
    if rgb.len() != w * h * 3 || grid.cols == 0 || grid.rows == 0 {
        return;
    }
    let mut put = |x: usize, y: usize| {
        if x < w && y < h {
            let i = (y * w + x) * 3;
            rgb[i..i + 3].copy_from_slice(&GRID_RGB);
        }
    };
    for c in 1..grid.cols {
        let x = edge(w, grid.cols, c);
        for y in 0..h {
            put(x, y);
        }
    }
    for r in 1..grid.rows {
        let y = edge(h, grid.rows, r);
        for x in 0..w {
            put(x, y);
        }
    }
    for r in 0..grid.rows {
        for c in 0..grid.cols.min(26) {
            let label = format!("{}{}", (b'A' + c as u8) as char, r + 1);
            let (x0, y0) = (edge(w, grid.cols, c) + 2, edge(h, grid.rows, r) + 2);
            for (k, ch) in label.chars().enumerate() {
                let Some(g) = glyph(ch) else { continue };
                for (dy, row) in g.iter().enumerate() {
                    for (dx, px) in row.bytes().enumerate() {
                        if px == b'#' {
                            put(x0 + 4 * k + dx, y0 + dy);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_grid(rgb: &[u8], w: usize, x: usize, y: usize) -> bool {
        let i = (y * w + x) * 3;
        rgb[i..i + 3] == GRID_RGB
    }

    /// Lines fall on the cell edges the parser uses, labels sit in their own cells, and the
    /// middle of a cell (where the scene is) is left alone.
    #[test]
    fn lines_and_labels_fall_where_the_parser_expects_them() {
        let grid = Grid {
            width: 160,
            height: 120,
            cols: 8,
            rows: 6,
        };
        let mut rgb = vec![0u8; 160 * 120 * 3];
        draw_grid(&mut rgb, &grid);
        assert!(is_grid(&rgb, 160, 20, 70), "vertical line at x = 20");
        assert!(is_grid(&rgb, 160, 90, 40), "horizontal line at y = 40");
        assert!(!is_grid(&rgb, 160, 30, 30), "cell middle untouched");
        // "A1" at (2, 2): the A's top row is .#., so (3, 2) is set and (2, 2) is not.
        assert!(is_grid(&rgb, 160, 3, 2) && !is_grid(&rgb, 160, 2, 2));
        // "C4"'s C starts at column C's edge (40) + 2, row 4's edge (60) + 2: .## on top.
        assert!(is_grid(&rgb, 160, 43, 62) && !is_grid(&rgb, 160, 42, 62));
        // The cell a label is in is the cell it names.
        assert_eq!(grid.cell_of([43.0, 62.0]), "C4");
        // No pixel outside lines and labels changed.
        let drawn = rgb.chunks(3).filter(|p| *p == GRID_RGB).count();
        assert!(drawn < 160 * 120 / 4, "{drawn} pixels drawn");
    }

    /// A buffer of the wrong size is not touched (no panic, no partial drawing).
    #[test]
    fn a_mismatched_image_is_left_alone() {
        let grid = Grid {
            width: 160,
            height: 120,
            cols: 8,
            rows: 6,
        };
        let mut rgb = vec![7u8; 100];
        draw_grid(&mut rgb, &grid);
        assert!(rgb.iter().all(|&b| b == 7));
    }
}
