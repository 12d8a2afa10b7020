/**
 * The example page: sign in, the customer's dust and history, the products (dust-only ones
 * priced in dust), a cart with delivery, paying with dust and placing the order. The Dust
 * parts are the components under ./dust; the rest is ordinary Medusa storefront code.
 */
import { useCallback, useEffect, useMemo, useState, type FormEvent } from "react"
import type { HttpTypes } from "@medusajs/types"
import { config, dust, sdk } from "./sdk"
import { ApplyDust, appliedDust } from "./dust/ApplyDust"
import { DustBalance } from "./dust/DustBalance"
import { DustHistory } from "./dust/DustHistory"
import { DustPrice, isDustOnly, useDustProducts } from "./dust/DustPrice"
import { redeemValue, type DustBalanceReply } from "./dust/client"
import { formatDust, formatMoney } from "./dust/format"
import { storeError } from "./shop/errors"

const CART_KEY = "dust_example_cart_id"

type Customer = HttpTypes.StoreCustomer
type Cart = HttpTypes.StoreCart
type Product = HttpTypes.StoreProduct
type Region = HttpTypes.StoreRegion

export function App() {
  const [customer, setCustomer] = useState<Customer | null>(null)
  const [checking, setChecking] = useState(true)

  useEffect(() => {
    // A token from an earlier visit (the SDK keeps it in localStorage).
    sdk.store.customer
      .retrieve()
      .then(({ customer }) => setCustomer(customer))
      .catch(() => undefined)
      .finally(() => setChecking(false))
  }, [])

  async function signOut() {
    await sdk.auth.logout().catch(() => undefined)
    await sdk.client.clearToken()
    localStorage.removeItem(CART_KEY)
    setCustomer(null)
  }

  return (
    <div className="page">
      <header className="page-header">
        <h1>Dust storefront example</h1>
        {customer ? (
          <p>
            Signed in as <strong data-testid="customer-email">{customer.email}</strong>{" "}
            <button type="button" onClick={() => void signOut()}>
              Sign out
            </button>
          </p>
        ) : null}
      </header>
      {!config.publishableKey ? (
        <p role="alert" className="dust-error">
          VITE_MEDUSA_PUBLISHABLE_KEY is not set: copy .env.example to .env.local and build again.
        </p>
      ) : checking ? (
        <p aria-busy="true">Loading…</p>
      ) : customer ? (
        <Shop customer={customer} />
      ) : (
        <SignIn onSignedIn={setCustomer} />
      )}
    </div>
  )
}

function SignIn({ onSignedIn }: { onSignedIn: (c: Customer) => void }) {
  const [email, setEmail] = useState("")
  const [password, setPassword] = useState("")
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)

  async function submit(event: FormEvent) {
    event.preventDefault()
    setBusy(true)
    setError(null)
    try {
      const result = await sdk.auth.login("customer", "emailpass", { email, password })
      if (typeof result !== "string") {
        setError("This account needs another sign-in step, which this example does not support.")
        return
      }
      const { customer } = await sdk.store.customer.retrieve()
      onSignedIn(customer)
    } catch (e) {
      setError(storeError(e, "Could not sign in."))
    } finally {
      setBusy(false)
    }
  }

  return (
    <form className="dust-card sign-in" onSubmit={submit}>
      <h2>Sign in</h2>
      <label>
        Email
        <input name="email" type="email" autoComplete="email" value={email} onChange={(e) => setEmail(e.target.value)} required />
      </label>
      <label>
        Password
        <input
          name="password"
          type="password"
          autoComplete="current-password"
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          required
        />
      </label>
      <button type="submit" disabled={busy}>
        {busy ? "Signing in…" : "Sign in"}
      </button>
      {error ? (
        <p role="alert" className="dust-error">
          {error}
        </p>
      ) : null}
    </form>
  )
}

function Shop({ customer }: { customer: Customer }) {
  const [region, setRegion] = useState<Region | null>(null)
  const [products, setProducts] = useState<Product[]>([])
  const [cart, setCart] = useState<Cart | null>(null)
  const [balance, setBalance] = useState<DustBalanceReply | null>(null)
  const [refreshKey, setRefreshKey] = useState(0)
  const [error, setError] = useState<string | null>(null)
  const [order, setOrder] = useState<{ order: HttpTypes.StoreOrder; dust: number } | null>(null)
  const currency = region?.currency_code ?? "usd"

  useEffect(() => {
    ;(async () => {
      try {
        const { regions } = await sdk.store.region.list()
        const chosen = regions.find((r) => r.id === config.regionId) ?? regions[0]
        if (!chosen) throw new Error("The store has no region")
        setRegion(chosen)
        const { products } = await sdk.store.product.list({
          region_id: chosen.id,
          fields: "*variants.calculated_price",
          limit: 20,
        })
        setProducts(products)
        const saved = localStorage.getItem(CART_KEY)
        if (saved) {
          const { cart } = await sdk.store.cart.retrieve(saved).catch(() => ({ cart: null }))
          if (cart && !cart.completed_at) setCart(cart)
          else localStorage.removeItem(CART_KEY)
        }
      } catch (e) {
        setError(storeError(e, "Could not load the store."))
      }
    })()
  }, [])

  const { settings, error: settingsError } = useDustProducts(
    dust,
    useMemo(() => products.map((p) => p.id), [products])
  )

  const reloadCart = useCallback(async (id: string) => {
    const { cart } = await sdk.store.cart.retrieve(id)
    setCart(cart)
    return cart
  }, [])

  async function addToCart(variantId: string) {
    setError(null)
    try {
      let id = cart?.id
      if (!id) {
        const created = await sdk.store.cart.create({ region_id: region!.id, email: customer.email })
        id = created.cart.id
        localStorage.setItem(CART_KEY, id)
      }
      await sdk.store.cart.createLineItem(id, { variant_id: variantId, quantity: 1 })
      await reloadCart(id)
    } catch (e) {
      setError(storeError(e, "Could not add to the cart."))
    }
  }

  // Dust the cart's dust-only items cost (their dust_price per unit).
  const required = (cart?.items ?? []).reduce((sum, item) => {
    const s = settings?.get(item.product_id ?? "")
    return sum + (isDustOnly(s) ? s.dust_price * item.quantity : 0)
  }, 0)

  const onLoaded = useCallback((b: DustBalanceReply) => setBalance(b), [])

  return (
    <>
      {error ? (
        <p role="alert" className="dust-error">
          {error}
        </p>
      ) : null}
      {order ? (
        <p className="dust-card order-placed" role="status" data-testid="order-placed">
          Thank you! Order #{order.order.display_id} is placed.
          {order.dust > 0 ? ` You paid ${formatDust(order.dust)} of it with dust.` : ""}
        </p>
      ) : null}
      <div className="columns">
        <div>
          <DustBalance dust={dust} currency={currency} refreshKey={refreshKey} onLoaded={onLoaded} />
          <DustHistory dust={dust} refreshKey={refreshKey} />
        </div>
        <div>
          <section className="dust-card" aria-labelledby="products-title">
            <h2 id="products-title">Products</h2>
            {settingsError ? (
              <p role="alert" className="dust-error">
                {settingsError.message}
              </p>
            ) : null}
            <ul className="products">
              {products.map((p) => {
                const variant = p.variants?.[0]
                return (
                  <li key={p.id} data-testid="product" data-handle={p.handle}>
                    <span className="product-title">{p.title}</span>
                    <DustPrice
                      settings={settings?.get(p.id)}
                      amount={variant?.calculated_price?.calculated_amount}
                      currency={currency}
                      error={settingsError}
                    />
                    <button type="button" disabled={!variant || !settings} onClick={() => variant && void addToCart(variant.id)}>
                      Add to cart
                    </button>
                  </li>
                )
              })}
            </ul>
          </section>
          {cart && (cart.items?.length ?? 0) > 0 ? (
            <Checkout
              cart={cart}
              customer={customer}
              required={required}
              balance={balance}
              reload={async () => {
                await reloadCart(cart.id)
                setRefreshKey((k) => k + 1)
              }}
              onPlaced={(placed, paidDust) => {
                localStorage.removeItem(CART_KEY)
                setCart(null)
                setOrder({ order: placed, dust: paidDust })
                setRefreshKey((k) => k + 1)
              }}
            />
          ) : null}
        </div>
      </div>
    </>
  )
}

const EXAMPLE_ADDRESS = {
  first_name: "",
  last_name: "",
  address_1: "1 Main St",
  city: "New York",
  province: "ny",
  postal_code: "10001",
  country_code: "us",
}

const FIELD_LABELS = {
  first_name: "First name",
  last_name: "Last name",
  address_1: "Address",
  city: "City",
  postal_code: "Postal code",
  country_code: "Country (ISO code)",
}

function Checkout(props: {
  cart: Cart
  customer: Customer
  required: number
  balance: DustBalanceReply | null
  reload: () => Promise<void>
  onPlaced: (order: HttpTypes.StoreOrder, paidDust: number) => void
}) {
  const { cart, customer, required, balance, reload, onPlaced } = props
  const [address, setAddress] = useState({
    ...EXAMPLE_ADDRESS,
    first_name: customer.first_name ?? "",
    last_name: customer.last_name ?? "",
    country_code: cart.region?.countries?.[0]?.iso_2 ?? EXAMPLE_ADDRESS.country_code,
  })
  const [options, setOptions] = useState<HttpTypes.StoreCartShippingOption[]>([])
  const [optionId, setOptionId] = useState("")
  const [error, setError] = useState<string | null>(null)
  const [busy, setBusy] = useState(false)
  const currency = cart.currency_code
  const delivered = (cart.shipping_methods?.length ?? 0) > 0 && Boolean(cart.shipping_address?.address_1)
  const applied = appliedDust(cart)
  // What the dust pays: the amount of the cart's `reference: "dust"` credit lines.
  const dustMoney = ((cart as { credit_lines?: { reference?: string; amount?: unknown }[] }).credit_lines ?? [])
    .filter((line) => line.reference === "dust")
    .reduce((sum, line) => sum + Number(line.amount ?? 0), 0)

  useEffect(() => {
    sdk.store.fulfillment
      .listCartOptions({ cart_id: cart.id })
      .then(({ shipping_options }) => {
        setOptions(shipping_options)
        setOptionId((id) => id || shipping_options[0]?.id || "")
      })
      .catch((e) => setError(storeError(e, "Could not load the delivery options.")))
  }, [cart.id])

  async function step(work: () => Promise<unknown>, failure: string) {
    setBusy(true)
    setError(null)
    try {
      await work()
    } catch (e) {
      setError(storeError(e, failure))
    } finally {
      setBusy(false)
    }
  }

  function saveDelivery(event: FormEvent) {
    event.preventDefault()
    void step(async () => {
      await sdk.store.cart.update(cart.id, { shipping_address: address, billing_address: address, email: customer.email })
      await sdk.store.cart.addShippingMethod(cart.id, { option_id: optionId })
      await reload()
    }, "Could not save the delivery.")
  }

  function placeOrder() {
    void step(async () => {
      // A cart paid in full with dust needs no payment; otherwise the store's provider
      // (here Medusa's system provider, "pp_system_default": no card, as in a test store).
      const { cart: fresh } = await sdk.store.cart.retrieve(cart.id)
      if (Number(fresh.total) > 0) {
        await sdk.store.payment.initiatePaymentSession(fresh, { provider_id: "pp_system_default" })
      }
      const result = await sdk.store.cart.complete(cart.id)
      if (result.type !== "order") {
        throw new Error(result.error?.message ?? "The order could not be placed")
      }
      onPlaced(result.order, appliedDust(fresh))
    }, "Could not place the order.")
  }

  return (
    <section className="dust-card" aria-labelledby="cart-title" data-testid="cart">
      <h2 id="cart-title">Your cart</h2>
      <ul className="cart-items">
        {cart.items?.map((item) => (
          <li key={item.id}>
            {item.quantity} × {item.product_title ?? item.title}
          </li>
        ))}
      </ul>
      <dl className="dust-figures" data-testid="cart-totals">
        <dt>Items</dt>
        <dd>{formatMoney(Number(cart.item_subtotal ?? 0), currency)}</dd>
        <dt>Shipping</dt>
        <dd>{formatMoney(Number(cart.shipping_subtotal ?? 0), currency)}</dd>
        <dt>Tax</dt>
        <dd>{formatMoney(Number(cart.tax_total ?? 0), currency)}</dd>
        {applied > 0 ? (
          <>
            <dt>Dust</dt>
            <dd data-testid="cart-dust">
              −{formatMoney(dustMoney, currency)} ({formatDust(applied)})
            </dd>
          </>
        ) : null}
        <dt>To pay</dt>
        <dd data-testid="cart-total">{formatMoney(Number(cart.total ?? 0), currency)}</dd>
      </dl>

      <form onSubmit={saveDelivery} className="delivery">
        <h3>Delivery</h3>
        {(["first_name", "last_name", "address_1", "city", "postal_code", "country_code"] as const).map((field) => (
          <label key={field}>
            {FIELD_LABELS[field]}
            <input
              name={field}
              value={address[field]}
              onChange={(e) => setAddress((a) => ({ ...a, [field]: e.target.value }))}
              required
            />
          </label>
        ))}
        <label>
          Shipping
          <select name="shipping_option" value={optionId} onChange={(e) => setOptionId(e.target.value)} required>
            {options.map((o) => (
              <option key={o.id} value={o.id}>
                {o.name} ({formatMoney(Number(o.amount ?? 0), currency)})
              </option>
            ))}
          </select>
        </label>
        <button type="submit" disabled={busy || !optionId}>
          {delivered ? "Update delivery" : "Save delivery"}
        </button>
      </form>

      {balance ? (
        <ApplyDust
          key={`${cart.id}:${applied}:${required}`}
          dust={dust}
          cart={cart}
          available={balance.dust.available}
          redeemValue={redeemValue(balance, currency)}
          required={required}
          onChange={reload}
        />
      ) : null}

      <button
        type="button"
        className="place-order"
        disabled={busy || !delivered || applied < required}
        onClick={placeOrder}
      >
        {busy ? "Working…" : "Place order"}
      </button>
      {!delivered ? <p className="dust-muted">Save the delivery first.</p> : null}
      {error ? (
        <p role="alert" className="dust-error">
          {error}
        </p>
      ) : null}
    </section>
  )
}
