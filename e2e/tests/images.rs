//! Palisade's own images (checklist 10.3), built by `e2e/images` in `e2e/run-tests` into the
//! run's registry and signed with the run's key: the real cosign CLI verifies them (and refuses
//! another key), their binaries are static so the gateway runs inside server images of any
//! libc, and each layer is the same bytes when packed again from the same binary.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use palisade_e2e::{cosign, repo_root, signed_images, tool};

struct Built {
    name: String,
    image: String,
    layer_sha256: String,
    epoch: String,
}

fn built() -> Vec<Built> {
    let tsv = std::env::var("PALISADE_E2E_IMAGES").expect("run through e2e/run-tests");
    let text = std::fs::read_to_string(&tsv).unwrap();
    let rows: Vec<Built> = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Built {
                name: f[0].into(),
                image: f[1].into(),
                layer_sha256: f[2].into(),
                epoch: f[3].into(),
            }
        })
        .collect();
    let mut names: Vec<&str> = rows.iter().map(|b| b.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["palisade", "palisade-gateway"]);
    rows
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-images-{tag}-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The image's filesystem, flattened by `crane export`, unpacked into `dir`.
fn export(image: &str, dir: &Path) {
    let tar = dir.join("fs.tar");
    let out = Command::new(tool("crane").unwrap())
        .args(["export", "--insecure", image])
        .arg(&tar)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// True when the ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "64-bit ELF expected");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == 3
    })
}

#[tokio::test]
async fn the_images_verify_with_the_signing_key_only() {
    let signed = signed_images().expect("e2e/run-tests provides the run's key");
    for b in built() {
        let args = [
            "verify",
            "--key",
            "cosign.pub",
            "--insecure-ignore-tlog=true",
            "--allow-http-registry",
            &b.image,
        ];
        cosign(&signed.dir, &args).await.unwrap_or_else(|e| panic!("{}: {e}", b.name));
        let other = scratch("otherkey");
        cosign(&other, &["generate-key-pair"]).await.unwrap();
        let err = cosign(&other, &args).await.expect_err("another key must not verify");
        assert!(format!("{err}").contains("no matching signatures"), "{}: {err}", b.name);
        let _ = std::fs::remove_dir_all(other);
    }
}

#[test]
fn the_binaries_are_static_and_run_as_the_image_says() {
    for b in built() {
        let dir = scratch(&b.name);
        export(&b.image, &dir);
        let exe = dir.join(&b.name);
        let elf = std::fs::read(&exe).unwrap();
        assert!(!has_interpreter(&elf), "{}: dynamically linked", b.name);
        let out = Command::new(&exe).arg("--version").output().unwrap();
        assert!(out.status.success(), "{}: {}", b.name, String::from_utf8_lossy(&out.stderr));
        let version = String::from_utf8_lossy(&out.stdout);
        assert!(version.contains(env!("CARGO_PKG_VERSION")), "{}: {version}", b.name);
        // The nonroot user the image's config runs as exists in its /etc/passwd.
        let passwd = std::fs::read_to_string(dir.join("etc/passwd")).unwrap();
        assert!(passwd.lines().any(|l| l.starts_with("nonroot:x:65532:65532:")), "{passwd}");
        let config = Command::new(tool("crane").unwrap())
            .args(["config", "--insecure", &b.image])
            .output()
            .unwrap();
        let config: serde_json::Value = serde_json::from_slice(&config.stdout).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532", "{}", b.name);
        assert_eq!(config["config"]["Entrypoint"][0], format!("/{}", b.name));

        // Packing the same binary again gives the same layer, byte for byte.
        let again = dir.join("again.tar");
        let out = Command::new("python3")
            .arg(repo_root().join("e2e/images-layer.py"))
            .arg(&exe)
            .arg(&b.name)
            .arg(&b.epoch)
            .arg(&again)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let sum = Command::new("sha256sum").arg(&again).output().unwrap();
        let sum = String::from_utf8_lossy(&sum.stdout);
        assert_eq!(sum.split_whitespace().next(), Some(b.layer_sha256.as_str()), "{}", b.name);
        let _ = std::fs::remove_dir_all(dir);
    }
}
