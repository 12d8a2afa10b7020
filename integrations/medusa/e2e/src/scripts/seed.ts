// Seeds the store the flows buy from, with Medusa's own workflows: a usd region taxed at
// 8.875 % (so totals are not whole cents), a jpy region (no minor unit), one sales channel
// with a publishable key, a stock location with a shipping option per region paid through
// the system payment provider. Writes the ids the flows need to E2E_SEED_OUT. The products
// are created afterwards through the admin API while the store runs (flows/seed-products.mjs),
// so that the plugin sees their product.created as it would in a live store.
import { writeFileSync } from "node:fs"
import { ExecArgs } from "@medusajs/framework/types"
import { ContainerRegistrationKeys, Modules } from "@medusajs/framework/utils"
import {
  createApiKeysWorkflow,
  createRegionsWorkflow,
  createSalesChannelsWorkflow,
  createShippingOptionsWorkflow,
  createShippingProfilesWorkflow,
  createStockLocationsWorkflow,
  createTaxRegionsWorkflow,
  linkSalesChannelsToApiKeyWorkflow,
  linkSalesChannelsToStockLocationWorkflow,
  updateStoresWorkflow,
} from "@medusajs/medusa/core-flows"

export const TAX_RATE_PERCENT = 8.875

export default async function seed({ container }: ExecArgs) {
  const out = process.env.E2E_SEED_OUT
  if (!out) throw new Error("E2E_SEED_OUT is not set")
  const link = container.resolve(ContainerRegistrationKeys.LINK)
  const fulfillment = container.resolve(Modules.FULFILLMENT)
  const storeService = container.resolve(Modules.STORE)

  const {
    result: [channel],
  } = await createSalesChannelsWorkflow(container).run({
    input: { salesChannelsData: [{ name: "Dust e2e" }] },
  })
  const [store] = await storeService.listStores()
  await updateStoresWorkflow(container).run({
    input: {
      selector: { id: store.id },
      update: {
        supported_currencies: [
          { currency_code: "usd", is_default: true },
          { currency_code: "jpy" },
        ],
        default_sales_channel_id: channel.id,
      },
    },
  })

  const {
    result: [usd, jpy],
  } = await createRegionsWorkflow(container).run({
    input: {
      regions: [
        { name: "United States", currency_code: "usd", countries: ["us"], payment_providers: ["pp_system_default"] },
        { name: "Japan", currency_code: "jpy", countries: ["jp"], payment_providers: ["pp_system_default"] },
      ],
    },
  })
  await createTaxRegionsWorkflow(container).run({
    input: [
      {
        country_code: "us",
        provider_id: "tp_system",
        default_tax_rate: { rate: TAX_RATE_PERCENT, code: "NYC", name: "New York City" },
      },
      { country_code: "jp", provider_id: "tp_system" },
    ],
  })

  const {
    result: [location],
  } = await createStockLocationsWorkflow(container).run({
    input: { locations: [{ name: "Warehouse", address: { city: "New York", country_code: "US", address_1: "1 Main St" } }] },
  })
  await link.create({
    [Modules.STOCK_LOCATION]: { stock_location_id: location.id },
    [Modules.FULFILLMENT]: { fulfillment_provider_id: "manual_manual" },
  })
  let [profile] = await fulfillment.listShippingProfiles({ type: "default" })
  if (!profile) {
    const { result } = await createShippingProfilesWorkflow(container).run({
      input: { data: [{ name: "Default", type: "default" }] },
    })
    profile = result[0]
  }
  const fulfillmentSet = await fulfillment.createFulfillmentSets({
    name: "Warehouse delivery",
    type: "shipping",
    service_zones: [
      {
        name: "US and Japan",
        geo_zones: [
          { country_code: "us", type: "country" },
          { country_code: "jp", type: "country" },
        ],
      },
    ],
  })
  await link.create({
    [Modules.STOCK_LOCATION]: { stock_location_id: location.id },
    [Modules.FULFILLMENT]: { fulfillment_set_id: fulfillmentSet.id },
  })
  const shippingOption = (isReturn: boolean) => ({
    name: isReturn ? "Return" : "Standard",
    price_type: "flat" as const,
    provider_id: "manual_manual",
    service_zone_id: fulfillmentSet.service_zones[0].id,
    shipping_profile_id: profile.id,
    type: { label: isReturn ? "Return" : "Standard", description: "", code: isReturn ? "return" : "standard" },
    prices: [
      { region_id: usd.id, amount: isReturn ? 0 : 5 },
      { region_id: jpy.id, amount: isReturn ? 0 : 500 },
    ],
    rules: [
      { attribute: "enabled_in_store", value: "true", operator: "eq" as const },
      { attribute: "is_return", value: isReturn ? "true" : "false", operator: "eq" as const },
    ],
  })
  const {
    result: [standardOption, returnOption],
  } = await createShippingOptionsWorkflow(container).run({
    input: [shippingOption(false), shippingOption(true)],
  })
  await linkSalesChannelsToStockLocationWorkflow(container).run({
    input: { id: location.id, add: [channel.id] },
  })

  const {
    result: [key],
  } = await createApiKeysWorkflow(container).run({
    input: { api_keys: [{ title: "Dust e2e", type: "publishable", created_by: "" }] },
  })
  await linkSalesChannelsToApiKeyWorkflow(container).run({ input: { id: key.id, add: [channel.id] } })

  writeFileSync(
    out,
    JSON.stringify(
      {
        publishable_key: key.token,
        sales_channel_id: channel.id,
        regions: { usd: usd.id, jpy: jpy.id },
        stock_location_id: location.id,
        shipping_option_id: standardOption.id,
        return_shipping_option_id: returnOption.id,
        shipping_profile_id: profile.id,
      },
      null,
      2,
    ),
  )
}
