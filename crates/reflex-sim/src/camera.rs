//! Ray-cast cameras: one ray per pixel through rapier's query pipeline, no GPU.
//!
//! Each frame gives RGB (per-body colour with Lambert shading), depth along the optical axis in
//! metres (0 where nothing was hit, as a depth sensor reports no return), and a segmentation id
//! per pixel that indexes the world's segmentation table. Pinhole model, OpenCV convention:
//! x right, y down, z forward; pixel (u, v) covers [u, u+1) x [v, v+1).

use crate::error::SimError;
use crate::world::{World, SEG_NONE};
use nalgebra::{Isometry3, Matrix3, Point3, Rotation3, UnitQuaternion, Vector3};
use rapier3d::prelude::*;
pub use reflex_core::{look_at, Frame, Intrinsics};
use std::path::Path;

/// Where a camera is mounted.
#[derive(Clone, Debug, PartialEq)]
pub enum Mount {
    /// Fixed in the world, looking from `eye_m` at `target_m` with world z up.
    World {
        /// Camera centre, metres.
        eye_m: [f64; 3],
        /// Point the optical axis goes through, metres.
        target_m: [f64; 3],
    },
    /// On the hand: the optical axis along the hand's z (the approach direction).
    Wrist {
        /// Camera centre in the hand frame, metres.
        offset_m: [f64; 3],
    },
}

/// A camera: mount, resolution and field of view.
#[derive(Clone, Debug, PartialEq)]
pub struct Camera {
    /// Name (`front`, `wrist`, ...).
    pub name: String,
    /// Mount.
    pub mount: Mount,
    /// Width, pixels.
    pub width: usize,
    /// Height, pixels.
    pub height: usize,
    /// Vertical field of view, degrees.
    pub fov_y_deg: f64,
    /// Furthest distance a ray looks, metres.
    pub max_range_m: f64,
}

impl Camera {
    /// The default front camera, facing the arm across the table.
    pub fn front(width: usize, height: usize) -> Self {
        Self {
            name: "front".into(),
            mount: Mount::World {
                eye_m: [1.25, 0.0, 0.55],
                target_m: [0.45, 0.0, 0.05],
            },
            width,
            height,
            fov_y_deg: 50.0,
            max_range_m: 4.0,
        }
    }

    /// The default wrist camera, beside the hand, looking along the fingers.
    pub fn wrist(width: usize, height: usize) -> Self {
        Self {
            name: "wrist".into(),
            mount: Mount::Wrist {
                offset_m: [0.06, 0.0, 0.03],
            },
            width,
            height,
            fov_y_deg: 70.0,
            max_range_m: 2.0,
        }
    }

    /// Pinhole intrinsics for this resolution and field of view (square pixels).
    pub fn intrinsics(&self) -> Intrinsics {
        Intrinsics::from_fov(self.width, self.height, self.fov_y_deg)
    }

    /// Camera pose in the world (camera frame: x right, y down, z forward).
    pub fn pose(&self, world: &World) -> Isometry3<f64> {
        match &self.mount {
            Mount::World { eye_m, target_m } => {
                look_at(Point3::from(*eye_m), Point3::from(*target_m), Vector3::z())
            }
            Mount::Wrist { offset_m } => {
                let (p, q) = world.body_pose(world.hand_body);
                let hand = reflex_core::Pose {
                    position_m: p,
                    quat_xyzw: q,
                }
                .to_isometry();
                // Camera axes in the hand frame: x = hand y, y = -hand x, z = hand z.
                let r = Matrix3::new(0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0);
                let local = Isometry3::from_parts(
                    Vector3::from(*offset_m).into(),
                    UnitQuaternion::from_rotation_matrix(&Rotation3::from_matrix_unchecked(r)),
                );
                hand * local
            }
        }
    }
}

/// The image of the fixed bodies alone, for one world and one camera pose: what a fixed camera
/// reuses while world and camera stay. A world keeps the last few ([`RenderCache`]).
#[derive(Clone, Debug)]
struct StaticLayer {
    key: LayerKey,
    rgb: Vec<u8>,
    depth_m: Vec<f32>,
    segmentation: Vec<u16>,
}

/// The static layers a world has rendered lately, newest last (a few cameras and sizes).
#[derive(Debug, Default)]
pub struct RenderCache {
    layers: std::sync::Mutex<Vec<std::sync::Arc<StaticLayer>>>,
}

/// Static layers a world keeps.
const CACHED_LAYERS: usize = 4;

impl RenderCache {
    fn get(&self, key: &LayerKey) -> Option<std::sync::Arc<StaticLayer>> {
        let layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        layers.iter().rev().find(|l| l.key == *key).cloned()
    }

    fn put(&self, layer: std::sync::Arc<StaticLayer>) {
        let mut layers = self.layers.lock().unwrap_or_else(|e| e.into_inner());
        layers.retain(|l| l.key != layer.key);
        if layers.len() >= CACHED_LAYERS {
            layers.remove(0);
        }
        layers.push(layer);
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct LayerKey {
    world_id: u64,
    pose: [f64; 7],
    intrinsics: [f64; 4],
    size: (usize, usize),
    max_range_m: f64,
}

/// Writes `<stem>_rgb.png`, `<stem>_depth.png` (16-bit, millimetres) and, when the frame has
/// segmentation, `<stem>_seg.png` (16-bit ids).
pub fn save_png(frame: &Frame, dir: &Path, stem: &str) -> Result<(), SimError> {
    let w = frame.width as u32;
    let h = frame.height as u32;
    let save = |name: String, result: Result<(), image::ImageError>| {
        result.map_err(|e| SimError::Image {
            path: dir.join(name),
            message: e.to_string(),
        })
    };
    let rgb_path = dir.join(format!("{stem}_rgb.png"));
    let img =
        image::RgbImage::from_raw(w, h, frame.rgb.clone()).ok_or_else(|| SimError::Image {
            path: rgb_path.clone(),
            message: "buffer size does not match the frame size".into(),
        })?;
    save(format!("{stem}_rgb.png"), img.save(&rgb_path))?;
    let depth_mm: Vec<u16> = frame
        .depth_m
        .iter()
        .map(|d| (d * 1000.0).round().clamp(0.0, 65535.0) as u16)
        .collect();
    let depth_path = dir.join(format!("{stem}_depth.png"));
    let img =
        image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, depth_mm).ok_or_else(|| {
            SimError::Image {
                path: depth_path.clone(),
                message: "buffer size does not match the frame size".into(),
            }
        })?;
    save(format!("{stem}_depth.png"), img.save(&depth_path))?;
    if frame.segmentation.len() != frame.width * frame.height {
        return Ok(());
    }
    let seg_path = dir.join(format!("{stem}_seg.png"));
    let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(w, h, frame.segmentation.clone())
        .ok_or_else(|| SimError::Image {
            path: seg_path.clone(),
            message: "buffer size does not match the frame size".into(),
        })?;
    save(format!("{stem}_seg.png"), img.save(&seg_path))?;
    Ok(())
}

/// Fills one image row: (row index, RGB, depth, segmentation).
type RowFn<'a> = dyn Fn(usize, &mut [u8], &mut [f32], &mut [u16]) + Sync + 'a;

/// Everything a row of rays needs.
struct Rays<'a> {
    world: &'a World,
    origin: Vector,
    rot: nalgebra::Matrix3<f64>,
    k: Intrinsics,
    width: usize,
    max_range_m: f32,
    light: Vector,
}

impl Rays<'_> {
    fn dir(&self, u: usize, v: usize) -> Vector {
        // Direction with unit z in the camera frame: the hit time is the depth.
        let xc = (u as f64 + 0.5 - self.k.cx) / self.k.fx;
        let yc = (v as f64 + 0.5 - self.k.cy) / self.k.fy;
        let d = self.rot * Vector3::new(xc, yc, 1.0);
        Vector::new(d.x as f32, d.y as f32, d.z as f32)
    }

    /// Casts one ray through `qp`; returns colour, depth and segmentation id of the nearest hit
    /// within `max_toi`.
    fn cast(&self, qp: &QueryPipeline, dir: Vector, max_toi: f32) -> Option<([u8; 3], f32, u16)> {
        let (h, hit) = qp.cast_ray_and_get_normal(&Ray::new(self.origin, dir), max_toi, true)?;
        let id = self
            .world
            .physics
            .colliders
            .get(h)
            .map_or(SEG_NONE, |c| c.user_data as u16);
        let base = self
            .world
            .seg
            .get(id as usize)
            .map_or([1.0, 0.0, 1.0], |s| s.color_rgb);
        // Face the normal toward the camera so inner faces shade too.
        let n = if hit.normal.dot(dir) > 0.0 {
            -hit.normal
        } else {
            hit.normal
        };
        let shade = AMBIENT + (1.0 - AMBIENT) * n.dot(self.light).max(0.0);
        let c = base.map(|b| (b * shade * 255.0).round().clamp(0.0, 255.0) as u8);
        Some((c, hit.time_of_impact, id))
    }

    /// Casts every pixel of row `v` against the colliders `filter` admits.
    fn full_row(
        &self,
        v: usize,
        filter: fn() -> QueryFilter<'static>,
        rgb: &mut [u8],
        depth: &mut [f32],
        seg: &mut [u16],
    ) {
        let qp = self.world.physics.query_pipeline_with_filter(filter());
        for u in 0..self.width {
            let (c, z, id) = self.cast(&qp, self.dir(u, v), self.max_range_m).unwrap_or((
                BACKGROUND_RGB,
                0.0,
                SEG_NONE,
            ));
            rgb[3 * u..3 * u + 3].copy_from_slice(&c);
            depth[u] = z;
            seg[u] = id;
        }
    }
}

/// Light direction (towards the light), world frame: from above, slightly in front and left.
const LIGHT_DIR: [f32; 3] = [0.35, 0.25, 0.9];
const AMBIENT: f32 = 0.35;
const BACKGROUND_RGB: [u8; 3] = [200, 205, 215];

/// Renders `camera` in `world` into `frame` (resized if needed). Rows are cast in parallel on the
/// rayon pool when `parallel` is set; results are identical either way.
///
/// A world-mounted camera keeps the image of the fixed bodies (table, fixtures, the arm's base)
/// in `frame` and, each frame, casts rays only where a moving body's projected bounding box
/// falls, against moving bodies only and no further than the fixed scene. The result is the
/// same as casting every pixel against everything (a test checks it), for a fraction of the rays.
pub fn render(camera: &Camera, world: &World, frame: &mut Frame, parallel: bool) {
    render_with(
        camera,
        world,
        frame,
        parallel,
        matches!(camera.mount, Mount::World { .. }),
    )
}

/// Renders by casting every pixel against every collider: the reference [`render`] must match.
pub fn render_full(camera: &Camera, world: &World, frame: &mut Frame, parallel: bool) {
    render_with(camera, world, frame, parallel, false)
}

fn render_with(camera: &Camera, world: &World, frame: &mut Frame, parallel: bool, cached: bool) {
    if frame.width != camera.width || frame.height != camera.height {
        *frame = Frame::new(camera.width, camera.height);
    }
    frame
        .segmentation
        .resize(camera.width * camera.height, SEG_NONE);
    let k = camera.intrinsics();
    let pose = camera.pose(world);
    frame.intrinsics = k;
    frame.pose = pose;
    let light = {
        let l = Vector::new(LIGHT_DIR[0], LIGHT_DIR[1], LIGHT_DIR[2]);
        l / l.length()
    };
    let rays = Rays {
        world,
        origin: Vector::new(
            pose.translation.x as f32,
            pose.translation.y as f32,
            pose.translation.z as f32,
        ),
        rot: *pose.rotation.to_rotation_matrix().matrix(),
        k,
        width: camera.width,
        max_range_m: camera.max_range_m as f32,
        light,
    };
    let w = camera.width;
    let Frame {
        rgb,
        depth_m,
        segmentation,
        ..
    } = frame;
    let rows = |rgb: &mut [u8], depth: &mut [f32], seg: &mut [u16], split: usize, f: &RowFn| {
        if parallel {
            // Two halves: this thread renders one while a pool thread renders the other, so the
            // caller works instead of sleeping until the pool is done (with row-by-row tasks
            // that cost as much as it saved in a closed loop).
            let split = split.min(rgb.len() / (3 * w));
            let (rgb_a, rgb_b) = rgb.split_at_mut(3 * w * split);
            let (d_a, d_b) = depth.split_at_mut(w * split);
            let (s_a, s_b) = seg.split_at_mut(w * split);
            let half = |first_row: usize, rgb: &mut [u8], depth: &mut [f32], seg: &mut [u16]| {
                for (i, ((r, d), s)) in rgb
                    .chunks_mut(3 * w)
                    .zip(depth.chunks_mut(w))
                    .zip(seg.chunks_mut(w))
                    .enumerate()
                {
                    f(first_row + i, r, d, s);
                }
            };
            rayon::in_place_scope(|scope| {
                scope.spawn(|_| half(split, rgb_b, d_b, s_b));
                half(0, rgb_a, d_a, s_a);
            });
        } else {
            for (v, ((r, d), s)) in rgb
                .chunks_mut(3 * w)
                .zip(depth.chunks_mut(w))
                .zip(seg.chunks_mut(w))
                .enumerate()
            {
                f(v, r, d, s);
            }
        }
    };
    if !cached {
        rows(
            rgb,
            depth_m,
            segmentation,
            camera.height / 2,
            &|v, r, d, s| rays.full_row(v, QueryFilter::default, r, d, s),
        );
        return;
    }

    let q = pose.rotation.quaternion();
    let key = LayerKey {
        world_id: world.id,
        pose: [
            pose.translation.x,
            pose.translation.y,
            pose.translation.z,
            q.i,
            q.j,
            q.k,
            q.w,
        ],
        intrinsics: [k.fx, k.fy, k.cx, k.cy],
        size: (camera.width, camera.height),
        max_range_m: camera.max_range_m,
    };
    let layer = match world.render_cache.get(&key) {
        Some(layer) => layer,
        None => {
            let n = camera.width * camera.height;
            let mut layer = StaticLayer {
                key,
                rgb: vec![0; 3 * n],
                depth_m: vec![0.0; n],
                segmentation: vec![SEG_NONE; n],
            };
            rows(
                &mut layer.rgb,
                &mut layer.depth_m,
                &mut layer.segmentation,
                camera.height / 2,
                &|v, r, d, s| rays.full_row(v, QueryFilter::exclude_dynamic, r, d, s),
            );
            let layer = std::sync::Arc::new(layer);
            world.render_cache.put(layer.clone());
            layer
        }
    };
    let mut dynamic_mask = Vec::new();
    mark_moving_bodies(
        world,
        &pose,
        &k,
        camera.width,
        camera.height,
        &mut dynamic_mask,
    );
    let mask: &[bool] = &dynamic_mask;
    // Split the rows where half of the rays to cast lie above: the work is in the masked pixels.
    let total = mask.iter().filter(|m| **m).count();
    let mut seen = 0;
    let split = mask
        .chunks(w)
        .position(|row| {
            seen += row.iter().filter(|m| **m).count();
            2 * seen >= total
        })
        .map_or(camera.height / 2, |r| r + 1);
    rows(rgb, depth_m, segmentation, split, &|v, r, d, s| {
        let base = v * w;
        let qp = world
            .physics
            .query_pipeline_with_filter(QueryFilter::exclude_fixed());
        for u in 0..w {
            let i = base + u;
            let stat = (
                [layer.rgb[3 * i], layer.rgb[3 * i + 1], layer.rgb[3 * i + 2]],
                layer.depth_m[i],
                layer.segmentation[i],
            );
            let (c, z, id) = if mask[i] {
                // Anything moving must be nearer than the fixed scene to show.
                let limit = if stat.1 > 0.0 {
                    stat.1
                } else {
                    rays.max_range_m
                };
                rays.cast(&qp, rays.dir(u, v), limit).unwrap_or(stat)
            } else {
                stat
            };
            r[3 * u..3 * u + 3].copy_from_slice(&c);
            d[u] = z;
            s[u] = id;
        }
    });
}

/// Marks in `mask` every pixel a moving collider's oriented bounding box projects onto (plus
/// one pixel of margin). If a box reaches behind the camera the whole image is marked.
fn mark_moving_bodies(
    world: &World,
    pose: &Isometry3<f64>,
    k: &Intrinsics,
    width: usize,
    height: usize,
    mask: &mut Vec<bool>,
) {
    mask.clear();
    mask.resize(width * height, false);
    let inv = pose.inverse();
    for (_, c) in world.physics.colliders.iter() {
        let moving = c
            .parent()
            .and_then(|b| world.physics.bodies.get(b))
            .is_some_and(|b| !b.is_fixed());
        if !moving {
            continue;
        }
        // Corners of the collider's box in its own frame, moved to the world: tighter on
        // screen than the world-aligned box of a tilted link.
        let local = c.shape().compute_local_aabb();
        let (lo, hi) = (local.mins, local.maxs);
        let collider_pose = *c.position();
        let mut pts = [(0.0f64, 0.0f64); 8];
        for (corner, pt) in pts.iter_mut().enumerate() {
            let lp = Vector::new(
                if corner & 1 == 0 { lo.x } else { hi.x },
                if corner & 2 == 0 { lo.y } else { hi.y },
                if corner & 4 == 0 { lo.z } else { hi.z },
            );
            let wp = collider_pose.transform_point(lp);
            let pc = inv * Point3::new(wp.x as f64, wp.y as f64, wp.z as f64);
            if pc.z < 1e-3 {
                mask.fill(true);
                return;
            }
            *pt = (k.fx * pc.x / pc.z + k.cx, k.fy * pc.y / pc.z + k.cy);
        }
        // The box is convex and in front of the camera, so its image is the convex hull of its
        // projected corners; the shape inside it projects inside that hull.
        let hull = convex_hull(&mut pts);
        fill_convex(&pts[..hull], width, height, mask);
    }
}

/// Sorts `pts` into their convex hull (counter-clockwise, in place); returns the hull's length.
fn convex_hull(pts: &mut [(f64, f64); 8]) -> usize {
    pts.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let cross = |o: (f64, f64), a: (f64, f64), b: (f64, f64)| {
        (a.0 - o.0) * (b.1 - o.1) - (a.1 - o.1) * (b.0 - o.0)
    };
    // Andrew's monotone chain into a fixed buffer.
    let mut hull = [(0.0, 0.0); 16];
    let mut n = 0;
    for &p in pts.iter() {
        while n >= 2 && cross(hull[n - 2], hull[n - 1], p) <= 0.0 {
            n -= 1;
        }
        hull[n] = p;
        n += 1;
    }
    let lower = n + 1;
    for &p in pts.iter().rev().skip(1) {
        while n >= lower && cross(hull[n - 2], hull[n - 1], p) <= 0.0 {
            n -= 1;
        }
        hull[n] = p;
        n += 1;
    }
    let n = n.saturating_sub(1).max(1);
    pts[..n].copy_from_slice(&hull[..n]);
    n
}

/// Marks every pixel whose square touches the convex polygon `poly`, plus one pixel of margin.
fn fill_convex(poly: &[(f64, f64)], width: usize, height: usize, mask: &mut [bool]) {
    let vmin = poly.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let vmax = poly.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let row0 = (vmin.floor() - 1.0).clamp(0.0, height as f64) as usize;
    let row1 = (vmax.ceil() + 1.0).clamp(0.0, height as f64) as usize;
    for v in row0..row1 {
        // The polygon's x extent over the band of rows [v - 1, v + 2] (margin included).
        let (y0, y1) = (v as f64 - 1.0, v as f64 + 2.0);
        let (mut x0, mut x1) = (f64::MAX, f64::MIN);
        for i in 0..poly.len() {
            let a = poly[i];
            let b = poly[(i + 1) % poly.len()];
            // Clip the edge a-b to the band.
            let (lo, hi) = if a.1 <= b.1 { (a, b) } else { (b, a) };
            if hi.1 < y0 || lo.1 > y1 {
                continue;
            }
            let at = |y: f64| {
                if (hi.1 - lo.1).abs() < 1e-12 {
                    (lo.0.min(hi.0), lo.0.max(hi.0))
                } else {
                    let x = lo.0 + (hi.0 - lo.0) * (y - lo.1) / (hi.1 - lo.1);
                    (x, x)
                }
            };
            for (xa, xb) in [at(lo.1.max(y0)), at(hi.1.min(y1))] {
                x0 = x0.min(xa);
                x1 = x1.max(xb);
            }
        }
        if x0 > x1 {
            continue;
        }
        let u0 = (x0.floor() - 1.0).clamp(0.0, width as f64) as usize;
        let u1 = (x1.ceil() + 1.0).clamp(0.0, width as f64) as usize;
        mask[v * width + u0..v * width + u1].fill(true);
    }
}
