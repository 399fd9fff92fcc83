//! `ch06 image …`: the image store's commands, speaking as Docker's do.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::archive::{self, SaveFormat};
use crate::image::Image;
use crate::store::Store;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Load the images of a docker-archive, an OCI layout directory or an oci-archive
    Load { path: PathBuf },
    /// List the images: REPOSITORY, TAG, IMAGE ID and SIZE (of the layers as stored)
    Ls,
    /// Print an image's config as JSON
    Inspect { reference: String },
    /// Remove images by NAME[:TAG] or id, with the blobs and layers no other image uses
    Rm {
        #[arg(required = true)]
        references: Vec<String>,
    },
    /// Save an image to a file (a directory for --format oci)
    Save {
        reference: String,
        #[arg(short, long)]
        output: PathBuf,
        #[arg(long, value_enum, default_value = "docker-archive")]
        format: SaveFormat,
    },
    /// Make an image of one layer from a rootfs tar (plain, gzip or zstd), as docker import
    Import { rootfs: PathBuf, name: String },
}

/// Runs one `image` command on the store at `root`.
pub fn run_image_command(root: &Path, command: &ImageCommand) -> Result<()> {
    let store = Store::open(root)?;
    match command {
        ImageCommand::Load { path } => load(&store, path),
        ImageCommand::Ls => list(&store),
        ImageCommand::Inspect { reference } => inspect(&store, reference),
        ImageCommand::Rm { references } => remove(&store, references),
        ImageCommand::Save { reference, output, format } => {
            let _lock = store.lock()?;
            archive::save(&store, &store.image(reference)?, output, *format)
        }
        ImageCommand::Import { rootfs, name } => import(&store, rootfs, name),
    }
}

/// Loads (the layers unpacked on the way), and says what was loaded as `docker load` does.
fn load(store: &Store, path: &Path) -> Result<()> {
    let _lock = store.lock()?;
    store.clean_ingest()?;
    for image in archive::load(store, path)? {
        match &image.name {
            Some(name) => println!("Loaded image: {name}"),
            None => println!("Loaded image ID: {}", image.id),
        }
    }
    Ok(())
}

/// Imports a rootfs tar as an image, and prints its id as `docker import` does.
fn import(store: &Store, rootfs: &Path, name: &str) -> Result<()> {
    let _lock = store.lock()?;
    store.clean_ingest()?;
    let image = archive::import(store, rootfs, name)?;
    println!("{}", image.id);
    Ok(())
}

/// `docker images`: one line per name, in columns.
fn list(store: &Store) -> Result<()> {
    let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "SIZE"].map(String::from)];
    rows.extend(store.images()?.iter().map(row));
    print!("{}", columns(&rows));
    Ok(())
}

/// The row of `image ls` for one image: `<none>` for an image without a name.
fn row(image: &Image) -> [String; 4] {
    let (repository, tag) = match image.name.as_deref().and_then(|name| name.rsplit_once(':')) {
        Some((repository, tag)) => (repository.to_string(), tag.to_string()),
        None => ("<none>".to_string(), "<none>".to_string()),
    };
    [repository, tag, image.id.short().to_string(), human_size(image.size())]
}

/// Rows as left-aligned columns three spaces apart, as Docker's tabwriter prints them.
fn columns(rows: &[[String; 4]]) -> String {
    let width = |column: usize| rows.iter().map(|row| row[column].len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..4).map(width).collect();
    let mut text = String::new();
    for row in rows {
        let cells: Vec<String> =
            row.iter().zip(&widths).map(|(cell, width)| format!("{cell:width$}")).collect();
        text.push_str(cells.join("   ").trim_end());
        text.push('\n');
    }
    text
}

/// A size as Docker shows it: decimal units, four significant digits (`4.261MB`).
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < units.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let decimals = if size < 10.0 {
        3
    } else if size < 100.0 {
        2
    } else {
        1
    };
    let number = format!("{size:.decimals$}");
    let number = number.trim_end_matches('0').trim_end_matches('.');
    format!("{number}{}", units[unit])
}

/// Prints the image's config, as it is stored, as pretty JSON.
fn inspect(store: &Store, reference: &str) -> Result<()> {
    let image = store.image(reference)?;
    let config: serde_json::Value = serde_json::from_slice(&store.read_blob(&image.id)?)
        .with_context(|| format!("parse the config of {}", image.display_name()))?;
    println!("{}", serde_json::to_string_pretty(&config)?);
    Ok(())
}

/// `docker rmi`: `Untagged: NAME` for each name taken off, `Deleted: ID` once none is left.
fn remove(store: &Store, references: &[String]) -> Result<()> {
    let _lock = store.lock()?;
    for reference in references {
        let removal = store.remove_image(reference)?;
        for name in removal.untagged {
            println!("Untagged: {name}");
        }
        if let Some(id) = removal.deleted {
            println!("Deleted: {id}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_docker_prints_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_240), "1.24kB");
        assert_eq!(human_size(4_261_376), "4.261MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }

    #[test]
    fn columns_are_three_spaces_apart() {
        let rows = [["A", "TAG", "ID", "SIZE"], ["busybox", "latest", "0123", "1B"]]
            .map(|row| row.map(String::from));
        assert_eq!(
            columns(&rows),
            "A         TAG      ID     SIZE\nbusybox   latest   0123   1B\n"
        );
    }
}
