import { Module } from "@medusajs/framework/utils"
import DustModuleService from "./service"

export const DUST_MODULE = "dust"

export default Module(DUST_MODULE, {
  service: DustModuleService,
})
