import { defineWidgetConfig } from "@medusajs/admin-sdk"
import type { AdminProduct, DetailWidgetProps } from "@medusajs/framework/types"
import { Alert, Button, Container, Heading, Input, Label, Switch, Text } from "@medusajs/ui"
import { useMutation, useQueryClient } from "@tanstack/react-query"
import { useEffect, useState } from "react"
import { ErrorNote, FormError } from "../components/error-note"
import { readSettings, settingsMetadata } from "../lib/product-settings"
import { sdk } from "../lib/sdk"

/**
 * A product's dust settings: dust-only (bought with dust alone) and its price in dust. Saved
 * in the product's metadata, so Medusa's `product.updated` carries them to Dust.
 */
export function ProductDustWidget({ data: product }: DetailWidgetProps<AdminProduct>) {
  const client = useQueryClient()
  const saved = readSettings(product.metadata as Record<string, unknown> | null)
  const [dustOnly, setDustOnly] = useState(saved.dustOnly)
  const [price, setPrice] = useState(saved.price)
  const [formError, setFormError] = useState<string | null>(null)
  useEffect(() => {
    setDustOnly(saved.dustOnly)
    setPrice(saved.price)
  }, [product.id, saved.dustOnly, saved.price])
  const save = useMutation({
    mutationFn: (metadata: Record<string, unknown>) =>
      sdk.admin.product.update(product.id, { metadata: { ...(product.metadata ?? {}), ...metadata } }),
    onSuccess: () => client.invalidateQueries({ queryKey: ["products"] }),
  })
  const submit = (e: React.FormEvent) => {
    e.preventDefault()
    const checked = settingsMetadata(dustOnly, price)
    if (!checked.ok) {
      return setFormError(checked.error)
    }
    setFormError(null)
    save.mutate(checked.value)
  }
  return (
    <Container className="divide-y p-0" data-testid="dust-product-widget">
      <div className="px-6 py-4">
        <Heading level="h2">Dust</Heading>
        <Text size="small" className="text-ui-fg-subtle">
          {saved.dustOnly ? `Dust-only, ${saved.price} dust` : saved.price ? `Priced ${saved.price} dust; also sold for money` : "Sold for money"}
        </Text>
      </div>
      <form className="flex flex-col gap-y-3 px-6 py-4" onSubmit={submit} noValidate>
        <div className="flex items-center gap-x-2">
          <Switch id="dust-only" checked={dustOnly} onCheckedChange={(v) => setDustOnly(v === true)} />
          <Label htmlFor="dust-only">Dust-only (bought with dust alone)</Label>
        </div>
        <div className="flex flex-col gap-y-1">
          <Label htmlFor="dust-price">Price in dust</Label>
          <Input id="dust-price" inputMode="numeric" placeholder="1500" value={price} onChange={(e) => setPrice(e.target.value)} />
        </div>
        {formError ? <FormError message={formError} /> : null}
        {save.isError ? <ErrorNote error={save.error} testId="dust-product-error" refusedBy="Medusa" write /> : null}
        {save.isSuccess && !formError ? (
          <Alert variant="success" data-testid="dust-product-saved">
            Saved. Dust hears of it through Medusa's product.updated event.
          </Alert>
        ) : null}
        <div className="flex justify-end">
          <Button type="submit" size="small" isLoading={save.isPending}>
            Save dust settings
          </Button>
        </div>
      </form>
    </Container>
  )
}

export const config = defineWidgetConfig({ zone: "product.details.side.after" })

export default ProductDustWidget
