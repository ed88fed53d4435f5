"""bestiary.connectors"""
