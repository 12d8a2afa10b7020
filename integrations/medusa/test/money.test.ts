import { BigNumber as MedusaBigNumber } from "@medusajs/framework/utils"
import fc from "fast-check"
import { describe, expect, it } from "vitest"
import {
  Decimal,
  MappingError,
  decimal,
  dustMoneyMinor,
  dustToCover,
  fromMinor,
  rawText,
  toMinor,
} from "../src/lib/mapping"

describe("toMinor: the facts measured against Medusa 2.21.2", () => {
  it("rounds a computed 8.875 % tax half-up once: 2.3066125 -> 231", () => {
    expect(toMinor("2.3066125", 2)).toBe(231)
    expect(toMinor("28.2966125", 2)).toBe(2830)
  })
  it("reads $10.50 as 1050 whatever its form", () => {
    expect(toMinor(10.5, 2)).toBe(1050)
    expect(toMinor("10.50", 2)).toBe(1050)
    expect(toMinor({ value: "10.500000000000000000", precision: 20 }, 2)).toBe(1050)
    expect(toMinor(new MedusaBigNumber(10.5), 2)).toBe(1050)
    expect(toMinor(new MedusaBigNumber({ value: "10.5", precision: 20 }), 2)).toBe(1050)
  })
  it("reads raw_total as Medusa's query returns it", () => {
    expect(toMinor({ value: "15.44", precision: 20 }, 2)).toBe(1544)
  })
  it("keeps whole yen (0 digits) and fils (3 digits)", () => {
    expect(toMinor(1500, 0)).toBe(1500)
    expect(toMinor("1499.5", 0)).toBe(1500)
    expect(toMinor("1499.4999", 0)).toBe(1499)
    expect(toMinor("1.2345", 3)).toBe(1235)
    expect(toMinor("1.2344", 3)).toBe(1234)
    expect(toMinor("12.5", 3)).toBe(12500)
  })
  it("never sees a binary float: 0.1 + 0.2 dollars are 30 cents, 1.005 is 101", () => {
    expect(toMinor(0.1 + 0.2, 2)).toBe(30)
    expect(toMinor(1.005, 2)).toBe(101) // Math.round(1.005 * 100) is 100
    expect(toMinor(8.675, 2)).toBe(868) // Math.round(8.675 * 100) is 867
  })
  it("refuses what is not an amount", () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, "abc", "", null, undefined, {}, [], true]) {
      expect(() => toMinor(bad, 2)).toThrow(MappingError)
    }
    expect(() => toMinor(1, -1)).toThrow(MappingError)
    expect(() => toMinor(1, 1.5)).toThrow(MappingError)
    expect(() => toMinor("1e30", 2)).toThrow(/too large/)
  })
  it("writes decimals plainly", () => {
    expect(rawText({ value: "2.3066125000000000000", precision: 20 })).toBe("2.3066125")
    expect(fromMinor(1050, 2)).toBe("10.5")
    expect(fromMinor(1500, 0)).toBe("1500")
    expect(fromMinor(1235, 3)).toBe("1.235")
  })
})

describe("properties", () => {
  const digits = fc.constantFrom(0, 2, 3)
  const minor = fc.integer({ min: -1_000_000_000_000, max: 1_000_000_000_000 })

  it("minor -> major -> minor is the identity", () => {
    fc.assert(fc.property(minor, digits, (n, d) => toMinor(fromMinor(n, d), d) === n))
  })

  it("rounds to the nearest minor unit, halves up (away from zero)", () => {
    fc.assert(
      fc.property(minor, digits, fc.integer({ min: 0, max: 9999 }), (n, d, frac) => {
        // x = (n + frac/10000) minor units, written in major units
        const exact = new Decimal(n).plus(new Decimal(frac).dividedBy(10000))
        const major = exact.shiftedBy(-d).toFixed()
        const got = toMinor(major, d)
        const distance = new Decimal(got).minus(exact).abs()
        if (distance.isGreaterThan(0.5)) return false
        if (distance.isEqualTo(0.5)) return exact.isNegative() ? got < exact.toNumber() : got > exact.toNumber()
        return true
      })
    )
  })

  it("a number Medusa sends over HTTP converts as its decimal text does", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), (cents) => {
        const asNumber = cents / 100 // what JSON carries: 25.99
        return toMinor(asNumber, 2) === cents
      })
    )
  })

  it("dust never buys more money than it is worth, and dustToCover covers", () => {
    const redeem = fc.constantFrom("1", "0.5", "2", "0.333", "10", "1.25")
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 10_000_000 }), redeem, (dust, value) => {
        const money = dustMoneyMinor(dust, value)
        const worth = new Decimal(dust).times(value)
        return money <= worth.toNumber() && worth.minus(money).isLessThan(1)
      })
    )
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10_000_000 }), redeem, (minorAmount, value) => {
        const dust = dustToCover(minorAmount, value)
        return new Decimal(dust).times(value).isGreaterThanOrEqualTo(minorAmount) &&
          new Decimal(dust - 1).times(value).isLessThan(minorAmount)
      })
    )
  })

  it("decimal reads every form of the same amount alike", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000_000 }), fc.integer({ min: 0, max: 7 }), (units, scale) => {
        const text = new Decimal(units).shiftedBy(-scale).toFixed()
        const forms = [text, Number(text), { value: text, precision: 20 }, new MedusaBigNumber(text)]
        return forms.every((f) => decimal(f).isEqualTo(text))
      })
    )
  })
})
