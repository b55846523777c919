"""Getting readings from meters: Modbus buses and MQTT."""
