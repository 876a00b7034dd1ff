//! Benchmark of the pure rotation planner on a synthetic catalogue:
//! `rotation_plan [RELEASES] [MANIFESTS] [KEEP]` (defaults 200, 100000, 3).
//! Prints one JSON line: catalogue size, plan size, and the planning time. Run under
//! `/usr/bin/time -v` for peak memory (bench/rotation.sh does).

use std::time::Instant;

use embedded_registry::rotation::model::{
    release_version, Blob, Catalogue, Channel, Manifest, ManifestKind, Release, Repository,
};
use embedded_registry::rotation::plan::{plan, Policy};

fn dg(kind: u8, n: u64) -> String {
    format!("sha256:{kind:02x}{n:062x}")
}

fn image(repo: &mut Repository, d: String, blobs: Vec<Blob>) {
    repo.manifests.insert(
        d.clone(),
        Manifest {
            digest: d,
            kind: ManifestKind::Image,
            size: 1_000,
            children: vec![],
            blobs,
            subject: None,
        },
    );
}

fn blob(kind: u8, n: u64, size: u64) -> Blob {
    Blob {
        digest: dg(kind, n),
        size,
    }
}

/// 200 releases; each lists `per` module images, a tenth of them new in this release,
/// the rest carried over from the one before (shared); every tenth module image is
/// signed; every fourth release is a two-arch index; install repositories per release.
fn catalogue(releases: u64, manifests: u64) -> Catalogue {
    let mut root = Repository::new("deckhouse/ee");
    let mut install = Repository::new("deckhouse/ee/install");
    let new_per_release = (manifests / releases).saturating_sub(6).max(1);
    let per = new_per_release * 10;
    let mut current: Vec<String> = Vec::new();
    let mut next_module = 0u64;
    let mut out = Vec::new();
    for r in 0..releases {
        // Replace the oldest tenth of the module list with new images.
        let fresh: Vec<String> = (0..new_per_release)
            .map(|_| {
                next_module += 1;
                let d = dg(1, next_module);
                image(
                    &mut root,
                    d.clone(),
                    vec![
                        blob(2, next_module, 2_000),
                        blob(3, next_module % 50, 30_000_000),
                        blob(4, next_module, 5_000_000),
                    ],
                );
                if next_module.is_multiple_of(10) {
                    let sig = dg(5, next_module);
                    image(&mut root, sig.clone(), vec![blob(6, next_module, 500)]);
                    root.tags
                        .insert(format!("sha256-{}.sig", &d[7..]), sig.clone());
                    root.add_referrer(&d, &sig);
                }
                d
            })
            .collect();
        if current.len() as u64 >= per {
            current.drain(..new_per_release as usize);
        }
        current.extend(fresh);
        let tag = format!("v1.{}.{}", r / 10, r % 10);
        let d = dg(7, r);
        if r % 4 == 0 {
            let kids: Vec<String> = (0..2).map(|a| dg(8, r * 2 + a)).collect();
            for k in &kids {
                image(&mut root, k.clone(), vec![blob(9, r, 100_000_000)]);
            }
            root.manifests.insert(
                d.clone(),
                Manifest {
                    digest: d.clone(),
                    kind: ManifestKind::Index,
                    size: 500,
                    children: kids,
                    blobs: vec![],
                    subject: None,
                },
            );
        } else {
            image(&mut root, d.clone(), vec![blob(9, r, 100_000_000)]);
        }
        root.tags.insert(tag.clone(), d.clone());
        image(&mut install, dg(10, r), vec![blob(11, r, 20_000_000)]);
        install.tags.insert(tag.clone(), dg(10, r));
        out.push(Release {
            version: release_version(&tag).expect("valid"),
            tag,
            digest: d,
            modules: Some(current.clone()),
            created: Some(0),
        });
    }
    let channels = vec![Channel {
        name: "stable".into(),
        version: Some(out[out.len() / 2].tag.clone()),
    }];
    Catalogue {
        root,
        siblings: vec![install],
        others: vec![],
        releases: out,
        channels,
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: RELEASES MANIFESTS KEEP"))
        .collect();
    let releases = args.first().copied().unwrap_or(200);
    let manifests = args.get(1).copied().unwrap_or(100_000);
    let keep = args.get(2).copied().unwrap_or(3) as usize;
    let t = Instant::now();
    let cat = catalogue(releases, manifests);
    let built = t.elapsed();
    let total: usize = cat.root.manifests.len()
        + cat
            .siblings
            .iter()
            .map(|s| s.manifests.len())
            .sum::<usize>();
    let listed: usize = cat
        .releases
        .iter()
        .map(|r| r.modules.as_ref().map_or(0, Vec::len))
        .sum();
    let policy = Policy {
        keep,
        keep_releases: vec![],
        min_age_secs: 0,
        now: 1,
    };
    let t = Instant::now();
    let p = plan(&cat, &policy).expect("plan");
    let planned = t.elapsed();
    println!(
        "{}",
        serde_json::json!({
            "releases": releases,
            "manifests": total,
            "digestsListed": listed,
            "kept": p.kept.len(),
            "deletions": p.deletions.len(),
            "freedBytes": p.freed_bytes,
            "buildMs": built.as_millis(),
            "planMs": planned.as_millis(),
        })
    );
}
