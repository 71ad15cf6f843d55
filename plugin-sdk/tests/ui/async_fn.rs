use spear_plugin_sdk::prelude::*;

#[function]
async fn fetch(url: String) -> String {
    url
}

fn main() {}
