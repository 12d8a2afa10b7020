// The store's three products, created through Medusa's admin API while the store and the
// plugin run (so product.created reaches Dust as it would in a live store): a normal one, a
// dust-only one (metadata dust_only / dust_price) and a gift card. Adds their ids to the seed file.
import { readFileSync, writeFileSync } from "node:fs"
import { admin, DUST_ONLY_PRICE, PRICES } from "./lib.mjs"

const file = process.env.E2E_SEED_OUT
const seed = JSON.parse(readFileSync(file, "utf8"))

async function create(kind, handle, extra = {}) {
  const { product } = await admin("POST", "/admin/products", {
    body: {
      title: handle,
      handle,
      status: "published",
      shipping_profile_id: seed.shipping_profile_id,
      options: [{ title: "Kind", values: ["one"] }],
      variants: [
        {
          title: "one",
          sku: handle,
          manage_inventory: false,
          options: { Kind: "one" },
          prices: [
            { currency_code: "usd", amount: Number(PRICES.usd[kind]) },
            { currency_code: "jpy", amount: Number(PRICES.jpy[kind]) },
          ],
        },
      ],
      sales_channels: [{ id: seed.sales_channel_id }],
      ...extra,
    },
  })
  return { id: product.id, variant_id: product.variants[0].id }
}

seed.products = {
  normal: await create("normal", "dust-e2e-shirt"),
  dust_only: await create("dust_only", "dust-e2e-sticker", {
    metadata: { dust_only: true, dust_price: DUST_ONLY_PRICE },
  }),
  gift_card: await create("gift_card", "dust-e2e-gift-card", { is_giftcard: true }),
}
writeFileSync(file, JSON.stringify(seed, null, 2))
console.log(`created products ${Object.values(seed.products).map((p) => p.id).join(", ")}`)
