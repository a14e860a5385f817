//! Ray-cast cameras against known geometry.

use reflex_sim::camera::{render, Camera, Frame, Mount};
use reflex_sim::{Env, Task};

fn env(task: &str, seed: u64) -> Env {
    let mut e = Env::new(Task::load(task).unwrap()).unwrap();
    e.reset(seed).unwrap();
    e
}

#[test]
fn a_camera_looking_down_sees_the_table_at_its_height_within_1_mm() {
    let env = env("reach", 0);
    // Straight down from 0.9 m, over a patch of table the arm does not cover.
    let cam = Camera {
        name: "down".into(),
        mount: Mount::World {
            eye_m: [0.6, -0.55, 0.9],
            target_m: [0.6, -0.55, 0.0],
        },
        width: 64,
        height: 48,
        fov_y_deg: 20.0,
        max_range_m: 3.0,
    };
    let mut f = Frame::new(1, 1);
    render(&cam, env.world(), &mut f, false);
    assert_eq!((f.width, f.height), (64, 48));
    let table = env
        .world()
        .seg
        .iter()
        .position(|s| s.name == "table")
        .unwrap() as u16;
    for (i, (&d, &s)) in f.depth_m.iter().zip(&f.segmentation).enumerate() {
        assert_eq!(s, table, "pixel {i} is not table");
        // A plane facing the camera has the same depth along the optical axis everywhere.
        assert!((d - 0.9).abs() < 1e-3, "pixel {i}: depth {d}");
    }
    // Intrinsics: 20 degrees over 48 rows.
    let fy = 24.0 / (10f64.to_radians()).tan();
    assert!((f.intrinsics.fy - fy).abs() < 1e-9 && (f.intrinsics.cx - 32.0).abs() < 1e-12);
}

#[test]
fn segmentation_ids_match_the_bodies_under_the_pixels() {
    let env = env("pick_cube", 3);
    let cube = env.observation().objects[0].pose.position_m;
    let cam = Camera {
        name: "over_cube".into(),
        mount: Mount::World {
            eye_m: [cube[0], cube[1], 0.5],
            target_m: [cube[0], cube[1], 0.0],
        },
        width: 41,
        height: 41,
        fov_y_deg: 30.0,
        max_range_m: 3.0,
    };
    let mut f = Frame::new(41, 41);
    render(&cam, env.world(), &mut f, true);
    let seg = &env.world().seg;
    let centre = f.segmentation[20 * 41 + 20] as usize;
    assert_eq!(seg[centre].name, "cube");
    // The cube's top face is 5 cm above the table.
    let d = f.depth_m[20 * 41 + 20];
    assert!((d - (0.5 - 0.05)).abs() < 2e-3, "depth at cube top {d}");
    let corner = f.segmentation[0] as usize;
    assert_eq!(seg[corner].name, "table");
    // Red cube, brown table: colours come from the segmentation table.
    let px = &f.rgb[3 * (20 * 41 + 20)..3 * (20 * 41 + 20) + 3];
    assert!(px[0] > 2 * px[1] && px[0] > 2 * px[2], "cube pixel {px:?}");
}

#[test]
fn the_wrist_camera_sees_the_fingers_and_the_front_camera_sees_the_arm() {
    let env = env("pick_cube", 0);
    let mut f = Frame::new(64, 64);
    env.render(&Camera::wrist(64, 64), &mut f, false);
    let names: std::collections::HashSet<&str> = f
        .segmentation
        .iter()
        .map(|&s| env.world().seg[s as usize].name.as_str())
        .collect();
    assert!(
        names.contains("left_finger") || names.contains("right_finger"),
        "{names:?}"
    );
    assert!(names.contains("table"), "{names:?}");
    env.render(&Camera::front(64, 64), &mut f, false);
    let names: std::collections::HashSet<&str> = f
        .segmentation
        .iter()
        .map(|&s| env.world().seg[s as usize].name.as_str())
        .collect();
    for n in ["table", "hand", "cube"] {
        assert!(names.contains(n), "front camera misses {n}: {names:?}");
    }
}

#[test]
fn parallel_and_serial_rendering_agree_and_png_export_works() {
    let env = env("push", 1);
    let cam = Camera::front(96, 72);
    let mut a = Frame::new(96, 72);
    let mut b = Frame::new(96, 72);
    render(&cam, env.world(), &mut a, false);
    render(&cam, env.world(), &mut b, true);
    assert_eq!(a.rgb, b.rgb);
    assert_eq!(a.depth_m, b.depth_m);
    assert_eq!(a.segmentation, b.segmentation);
    let dir = std::env::temp_dir().join(format!("reflex-cam-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    reflex_sim::save_png(&a, &dir, "front").unwrap();
    let img = image::open(dir.join("front_rgb.png")).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (96, 72));
    assert_eq!(img.as_raw(), &a.rgb);
    let depth = image::open(dir.join("front_depth.png"))
        .unwrap()
        .to_luma16();
    let i = 36 * 96 + 48;
    assert_eq!(depth.as_raw()[i], (a.depth_m[i] * 1000.0).round() as u16);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_cached_front_camera_matches_full_ray_casting_along_a_trajectory() {
    use reflex_core::{Action, Policy};
    use reflex_sim::camera::render_full;
    use reflex_sim::ScriptedExpert;
    let task = Task::load("pick_cube").unwrap();
    let mut env = Env::new(task.clone()).unwrap();
    let mut expert = ScriptedExpert::new(&task, env.model());
    let mut obs = env.reset(4).unwrap();
    let mut a = Action::zeros(task.action_space);
    let cam = Camera::front(80, 60);
    let mut cached = Frame::new(80, 60);
    let mut full = Frame::new(80, 60);
    let mut compared = 0;
    for t in 0..16 {
        if t % 3 == 0 {
            env.render(&cam, &mut cached, t % 2 == 0);
            render_full(&cam, env.world(), &mut full, false);
            let differing = (0..80 * 60)
                .filter(|&i| {
                    cached.segmentation[i] != full.segmentation[i]
                        || cached.depth_m[i] != full.depth_m[i]
                })
                .count();
            assert_eq!(differing, 0, "step {t}: {differing} pixels differ");
            assert_eq!(cached.rgb, full.rgb, "step {t}");
            compared += 1;
        }
        expert.act(&obs, &mut a);
        obs = env.step(&a).unwrap().obs;
    }
    assert_eq!(compared, 6);
    // A new episode is a new world: the cached fixed scene must not leak into it.
    env.reset(5).unwrap();
    env.render(&cam, &mut cached, false);
    render_full(&cam, env.world(), &mut full, false);
    assert_eq!(cached.segmentation, full.segmentation);
}
