//! A whole mesh read from a directory of CLI outputs in every shape.

use crate::common::*;

#[test]
fn the_shop_mesh_imports() {
    let imp = import_fixture("shop");
    println!("{}", imp.report);
    println!("{}", imp.objects.to_toml().unwrap());
}
